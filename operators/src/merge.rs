//! `merge`: brings each part to the worker its key names (exchange by key)
//! and hands it to the sink. Parts reach the sink in no particular order; the
//! sink places each by its offset, so none is needed. The sink's receipts
//! leave on the first output, its failures, as data, on the second.

use std::cell::RefCell;
use std::rc::Rc;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::Stream;
use timely::progress::Timestamp;
use timely::ExchangeData;

use crate::ok_err::{unary_ok_err, OkErr};
use crate::{Part, Sink};

/// Merges decoded parts into a sink.
pub trait Merge<'scope, T: Timestamp, P> {
    /// Routes each part to worker `merge_key % peers`
    /// and gives it to `sink`: the first output carries the receipts, the
    /// second the failures.
    ///
    /// ```
    /// use std::{cell::RefCell, rc::Rc};
    /// use padic_burst_operators::{Merge, Part, Sink};
    /// use timely::dataflow::operators::{ToStream, Capture, capture::Extract};
    ///
    /// #[derive(Clone, serde::Serialize, serde::Deserialize)]
    /// struct P(usize);
    /// impl Part for P { fn merge_key(&self) -> usize { self.0 } }
    /// /// Takes parts of tensors below 3, refuses the rest.
    /// struct Below3;
    /// impl Sink<P> for Below3 {
    ///     type Receipt = usize;
    ///     type Error = String;
    ///     fn accept(&mut self, p: P) -> Result<usize, String> {
    ///         if p.0 < 3 { Ok(p.0) } else { Err(format!("no room for {}", p.0)) }
    ///     }
    /// }
    /// let (receipts, errors) = timely::example(|scope| {
    ///     let (ok, err) = (0..5).map(P).to_stream(scope).container::<Vec<_>>()
    ///         .merge(Rc::new(RefCell::new(Below3)));
    ///     (ok.capture(), err.capture())
    /// });
    /// let mut receipts: Vec<usize> = receipts.extract().into_iter().flat_map(|(_, v)| v).collect();
    /// receipts.sort();
    /// assert_eq!(receipts, vec![0, 1, 2]);
    /// let errors: Vec<String> = errors.extract().into_iter().flat_map(|(_, v)| v).collect();
    /// assert_eq!(errors.len(), 2);
    /// ```
    fn merge<S: Sink<P>>(self, sink: Rc<RefCell<S>>) -> OkErr<'scope, T, S::Receipt, S::Error>
    where
        S::Receipt: Clone + 'static,
        S::Error: Clone + 'static;
}

impl<'scope, T: Timestamp, P: ExchangeData + Part> Merge<'scope, T, P>
    for Stream<'scope, T, Vec<P>>
{
    fn merge<S: Sink<P>>(self, sink: Rc<RefCell<S>>) -> OkErr<'scope, T, S::Receipt, S::Error>
    where
        S::Receipt: Clone + 'static,
        S::Error: Clone + 'static,
    {
        let exchange = Exchange::new(|p: &P| p.merge_key() as u64);
        unary_ok_err(self, exchange, "Merge", move |data: &mut Vec<P>| {
            let mut sink = sink.borrow_mut();
            data.drain(..).map(|p| sink.accept(p)).collect()
        })
    }
}
