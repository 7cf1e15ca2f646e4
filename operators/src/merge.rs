//! `merge`: brings every part of a tensor to one worker (exchange by tensor)
//! and hands it to the sink. Parts reach the sink in no particular order; the
//! sink places each by its offset, so none is needed. The sink's receipts
//! leave on the first output, its failures, as data, on the second.

use std::cell::RefCell;
use std::rc::Rc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::Stream;
use timely::progress::Timestamp;
use timely::ExchangeData;

use crate::{Part, Sink};

/// Merges decoded parts into a sink.
pub trait Merge<'scope, T: Timestamp, P> {
    /// Routes each part to the worker owning its tensor (`tensor % peers`)
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
    /// impl Part for P { fn tensor(&self) -> usize { self.0 } }
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
    #[allow(clippy::type_complexity)]
    fn merge<S: Sink<P>>(
        self,
        sink: Rc<RefCell<S>>,
    ) -> (
        Stream<'scope, T, Vec<S::Receipt>>,
        Stream<'scope, T, Vec<S::Error>>,
    )
    where
        S::Receipt: Clone + 'static,
        S::Error: Clone + 'static;
}

impl<'scope, T: Timestamp, P: ExchangeData + Part> Merge<'scope, T, P>
    for Stream<'scope, T, Vec<P>>
{
    fn merge<S: Sink<P>>(
        self,
        sink: Rc<RefCell<S>>,
    ) -> (
        Stream<'scope, T, Vec<S::Receipt>>,
        Stream<'scope, T, Vec<S::Error>>,
    )
    where
        S::Receipt: Clone + 'static,
        S::Error: Clone + 'static,
    {
        let mut builder = OperatorBuilder::new("Merge".to_owned(), self.scope());
        let mut input = builder.new_input(self, Exchange::new(|p: &P| p.tensor() as u64));
        let (ok, ok_stream) = builder.new_output();
        let (err, err_stream) = builder.new_output();
        let mut ok = OutputBuilder::<_, CapacityContainerBuilder<Vec<S::Receipt>>>::from(ok);
        let mut err = OutputBuilder::<_, CapacityContainerBuilder<Vec<S::Error>>>::from(err);
        builder.build(move |_| {
            move |_frontiers| {
                let mut ok = ok.activate();
                let mut err = err.activate();
                input.for_each(|cap, data| {
                    let mut sink = sink.borrow_mut();
                    let mut receipts = ok.session(&cap);
                    let mut failures = err.session(&cap);
                    for p in data.drain(..) {
                        match sink.accept(p) {
                            Ok(r) => receipts.give(r),
                            Err(e) => failures.give(e),
                        }
                    }
                });
            }
        });
        (ok_stream, err_stream)
    }
}
