//! `decode`: turns routed chunks into decoded parts on this worker, with
//! failures on a second output (the ok/err split of timely's `ok_err`).

use std::rc::Rc;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::Stream;
use timely::progress::Timestamp;

use crate::ok_err::{unary_ok_err, OkErr};
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
    fn decode<D: PartDecoder<C>>(self, decoder: Rc<D>) -> OkErr<'scope, T, D::Part, D::Error>
    where
        D::Part: Clone + 'static,
        D::Error: Clone + 'static;
}

impl<'scope, T: Timestamp, C: Clone + 'static> Decode<'scope, T, C>
    for Stream<'scope, T, Vec<(C, RouteTag)>>
{
    fn decode<D: PartDecoder<C>>(self, decoder: Rc<D>) -> OkErr<'scope, T, D::Part, D::Error>
    where
        D::Part: Clone + 'static,
        D::Error: Clone + 'static,
    {
        unary_ok_err(self, Pipeline, "Decode", move |data| {
            decoder.decode_batch(std::mem::take(data))
        })
    }
}
