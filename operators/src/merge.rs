//! `merge_in_order`: brings every part of a tensor to one worker (exchange by
//! tensor) and hands it to the sink, which places it at its offset and checks
//! that each chunk arrives exactly once.

use std::cell::RefCell;
use std::rc::Rc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;
use timely::progress::Timestamp;
use timely::ExchangeData;

use crate::{Part, Sink};

/// Merges decoded parts into a sink.
pub trait MergeInOrder<'scope, T: Timestamp, P> {
    /// Routes each part to the worker owning its tensor (`tensor % peers`)
    /// and gives it to `sink`; the output carries the sink's receipts.
    ///
    /// ```
    /// use std::{cell::RefCell, rc::Rc, sync::{Arc, atomic::{AtomicUsize, Ordering}}};
    /// use padic_burst_operators::{MergeInOrder, Part, Sink};
    /// use timely::dataflow::operators::ToStream;
    ///
    /// #[derive(Clone, serde::Serialize, serde::Deserialize)]
    /// struct P(usize);
    /// impl Part for P { fn tensor(&self) -> usize { self.0 } }
    /// struct Count(Arc<AtomicUsize>);
    /// impl Sink<P> for Count {
    ///     type Receipt = ();
    ///     fn accept(&mut self, _: P) { self.0.fetch_add(1, Ordering::SeqCst); }
    /// }
    /// let seen = Arc::new(AtomicUsize::new(0));
    /// let s = seen.clone();
    /// timely::example(move |scope| {
    ///     let sink = Rc::new(RefCell::new(Count(s)));
    ///     (0..5).map(P).to_stream(scope).container::<Vec<_>>().merge_in_order(sink);
    /// });
    /// assert_eq!(seen.load(Ordering::SeqCst), 5);
    /// ```
    fn merge_in_order<S: Sink<P>>(self, sink: Rc<RefCell<S>>) -> Stream<'scope, T, Vec<S::Receipt>>
    where
        S::Receipt: Clone + 'static;
}

impl<'scope, T: Timestamp, P: ExchangeData + Part> MergeInOrder<'scope, T, P>
    for Stream<'scope, T, Vec<P>>
{
    fn merge_in_order<S: Sink<P>>(self, sink: Rc<RefCell<S>>) -> Stream<'scope, T, Vec<S::Receipt>>
    where
        S::Receipt: Clone + 'static,
    {
        self.unary::<CapacityContainerBuilder<Vec<S::Receipt>>, _, _, _>(
            Exchange::new(|p: &P| p.tensor() as u64),
            "MergeInOrder",
            move |_, _| {
                move |input, output| {
                    input.for_each(|cap, data| {
                        let mut sink = sink.borrow_mut();
                        let mut session = output.session(&cap);
                        for p in data.drain(..) {
                            session.give(sink.accept(p));
                        }
                    });
                }
            },
        )
    }
}
