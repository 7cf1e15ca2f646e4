//! `route`: tags each chunk GPU, CPU or HYBRID.

use std::rc::Rc;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;
use timely::progress::Timestamp;

use crate::{RouteTag, Router};

/// Tags each chunk with its route.
pub trait Route<'scope, T: Timestamp, C> {
    /// Pairs each chunk with the route `router` decides for it, in arrival order.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use padic_burst_operators::{Route, RouteTag, Router};
    /// use timely::dataflow::operators::{Inspect, ToStream};
    ///
    /// struct EvenOnGpu;
    /// impl Router<u64> for EvenOnGpu {
    ///     fn route(&self, c: &u64) -> RouteTag {
    ///         if c % 2 == 0 { RouteTag::Gpu } else { RouteTag::Cpu }
    ///     }
    /// }
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let s = seen.clone();
    /// timely::example(move |scope| {
    ///     (0u64..4).to_stream(scope).container::<Vec<_>>()
    ///         .route(std::rc::Rc::new(EvenOnGpu))
    ///         .inspect(move |x| s.lock().unwrap().push(*x));
    /// });
    /// let mut got = seen.lock().unwrap().clone();
    /// got.sort_by_key(|x| x.0);
    /// assert_eq!(got[1], (1, RouteTag::Cpu));
    /// assert_eq!(got[2], (2, RouteTag::Gpu));
    /// ```
    fn route<R: Router<C>>(self, router: Rc<R>) -> Stream<'scope, T, Vec<(C, RouteTag)>>;
}

impl<'scope, T: Timestamp, C: Clone + 'static> Route<'scope, T, C> for Stream<'scope, T, Vec<C>> {
    fn route<R: Router<C>>(self, router: Rc<R>) -> Stream<'scope, T, Vec<(C, RouteTag)>> {
        self.unary(Pipeline, "Route", move |_, _| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let mut session = output.session(&cap);
                    for c in data.drain(..) {
                        let tag = router.route(&c);
                        session.give((c, tag));
                    }
                });
            }
        })
    }
}
