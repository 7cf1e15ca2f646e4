//! `decode`: turns routed chunks into decoded parts on this worker.

use std::rc::Rc;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;
use timely::progress::Timestamp;

use crate::{PartDecoder, RouteTag};

/// Decodes routed chunks.
pub trait Decode<'scope, T: Timestamp, C> {
    /// Each routed chunk becomes the parts `decoder` makes of it (errors
    /// included, as data); each batch received goes to
    /// [`PartDecoder::decode_batch`] whole.
    ///
    /// ```
    /// use padic_burst_operators::{Decode, PartDecoder, RouteTag};
    /// use timely::dataflow::operators::{ToStream, Capture, capture::Extract};
    ///
    /// struct Square;
    /// impl PartDecoder<u64> for Square {
    ///     type Part = u64;
    ///     fn decode(&self, c: u64, _: RouteTag) -> Vec<u64> { vec![c * c] }
    /// }
    /// let got = timely::example(|scope| {
    ///     (0u64..4).map(|c| (c, RouteTag::Cpu)).to_stream(scope).container::<Vec<_>>()
    ///         .decode(std::rc::Rc::new(Square)).capture()
    /// });
    /// let mut got: Vec<u64> = got.extract().into_iter().flat_map(|(_, v)| v).collect();
    /// got.sort();
    /// assert_eq!(got, vec![0, 1, 4, 9]);
    /// ```
    fn decode<D: PartDecoder<C>>(self, decoder: Rc<D>) -> Stream<'scope, T, Vec<D::Part>>
    where
        D::Part: Clone + 'static;
}

impl<'scope, T: Timestamp, C: Clone + 'static> Decode<'scope, T, C>
    for Stream<'scope, T, Vec<(C, RouteTag)>>
{
    fn decode<D: PartDecoder<C>>(self, decoder: Rc<D>) -> Stream<'scope, T, Vec<D::Part>>
    where
        D::Part: Clone + 'static,
    {
        self.unary(Pipeline, "Decode", move |_, _| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let mut session = output.session(&cap);
                    for part in decoder.decode_batch(std::mem::take(data)) {
                        session.give(part);
                    }
                });
            }
        })
    }
}
