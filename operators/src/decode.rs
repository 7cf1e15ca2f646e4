//! `decode`: turns routed chunks into decoded parts on this worker, with
//! failures on a second output (the ok/err split of timely's `ok_err`).

use std::rc::Rc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::Stream;
use timely::progress::Timestamp;

use crate::{PartDecoder, RouteTag};

/// Decodes routed chunks.
pub trait Decode<'scope, T: Timestamp, C> {
    /// Each batch of routed chunks received goes to
    /// [`PartDecoder::decode_batch`] whole; the parts it makes leave on the
    /// first output, its failures, as data, on the second.
    ///
    /// ```
    /// use padic_burst_operators::{Decode, PartDecoder, RouteTag};
    /// use timely::dataflow::operators::{ToStream, Capture, capture::Extract};
    ///
    /// /// Squares even numbers; an odd one is an error.
    /// struct Square;
    /// impl PartDecoder<u64> for Square {
    ///     type Part = u64;
    ///     type Error = String;
    ///     fn decode_batch(&self, chunks: Vec<(u64, RouteTag)>) -> Vec<Result<u64, String>> {
    ///         chunks.into_iter()
    ///             .map(|(c, _)| if c % 2 == 0 { Ok(c * c) } else { Err(format!("{c} is odd")) })
    ///             .collect()
    ///     }
    /// }
    /// let (parts, errors) = timely::example(|scope| {
    ///     let (ok, err) = (0u64..4).map(|c| (c, RouteTag::Cpu)).to_stream(scope)
    ///         .container::<Vec<_>>().decode(std::rc::Rc::new(Square));
    ///     (ok.capture(), err.capture())
    /// });
    /// let mut parts: Vec<u64> = parts.extract().into_iter().flat_map(|(_, v)| v).collect();
    /// parts.sort();
    /// assert_eq!(parts, vec![0, 4]);
    /// let mut errors: Vec<String> = errors.extract().into_iter().flat_map(|(_, v)| v).collect();
    /// errors.sort();
    /// assert_eq!(errors, vec!["1 is odd", "3 is odd"]);
    /// ```
    #[allow(clippy::type_complexity)]
    fn decode<D: PartDecoder<C>>(
        self,
        decoder: Rc<D>,
    ) -> (
        Stream<'scope, T, Vec<D::Part>>,
        Stream<'scope, T, Vec<D::Error>>,
    )
    where
        D::Part: Clone + 'static,
        D::Error: Clone + 'static;
}

impl<'scope, T: Timestamp, C: Clone + 'static> Decode<'scope, T, C>
    for Stream<'scope, T, Vec<(C, RouteTag)>>
{
    fn decode<D: PartDecoder<C>>(
        self,
        decoder: Rc<D>,
    ) -> (
        Stream<'scope, T, Vec<D::Part>>,
        Stream<'scope, T, Vec<D::Error>>,
    )
    where
        D::Part: Clone + 'static,
        D::Error: Clone + 'static,
    {
        let mut builder = OperatorBuilder::new("Decode".to_owned(), self.scope());
        let mut input = builder.new_input(self, Pipeline);
        let (ok, ok_stream) = builder.new_output();
        let (err, err_stream) = builder.new_output();
        let mut ok = OutputBuilder::<_, CapacityContainerBuilder<Vec<D::Part>>>::from(ok);
        let mut err = OutputBuilder::<_, CapacityContainerBuilder<Vec<D::Error>>>::from(err);
        builder.build(move |_| {
            move |_frontiers| {
                let mut ok = ok.activate();
                let mut err = err.activate();
                input.for_each(|cap, data| {
                    let mut parts = ok.session(&cap);
                    let mut failures = err.session(&cap);
                    for result in decoder.decode_batch(std::mem::take(data)) {
                        match result {
                            Ok(part) => parts.give(part),
                            Err(e) => failures.give(e),
                        }
                    }
                });
            }
        });
        (ok_stream, err_stream)
    }
}
