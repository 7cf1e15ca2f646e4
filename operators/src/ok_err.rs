//! The shape `decode` and `merge` share: one input, and two outputs, the
//! logic's `Ok`s on the first and its `Err`s on the second (timely's
//! `core/ok_err.rs`, with a batch of results per received container).

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::ParallelizationContract;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::Stream;
use timely::progress::Timestamp;
use timely::Container;

/// An operator's two outputs: its `Ok`s and its `Err`s.
pub type OkErr<'scope, T, D1, D2> = (Stream<'scope, T, Vec<D1>>, Stream<'scope, T, Vec<D2>>);

/// An operator named `name` that reads `stream` through `pact` and turns
/// each received container into results with `logic`.
pub(crate) fn unary_ok_err<'scope, T, C, P, D1, D2, L>(
    stream: Stream<'scope, T, C>,
    pact: P,
    name: &str,
    mut logic: L,
) -> OkErr<'scope, T, D1, D2>
where
    T: Timestamp,
    C: Container,
    P: ParallelizationContract<T, C>,
    D1: Clone + 'static,
    D2: Clone + 'static,
    L: FnMut(&mut C) -> Vec<Result<D1, D2>> + 'static,
{
    let mut builder = OperatorBuilder::new(name.to_owned(), stream.scope());
    let mut input = builder.new_input(stream, pact);
    let (ok, ok_stream) = builder.new_output();
    let (err, err_stream) = builder.new_output();
    let mut ok = OutputBuilder::<_, CapacityContainerBuilder<Vec<D1>>>::from(ok);
    let mut err = OutputBuilder::<_, CapacityContainerBuilder<Vec<D2>>>::from(err);
    builder.build(move |_| {
        move |_frontiers| {
            let mut ok = ok.activate();
            let mut err = err.activate();
            input.for_each(|cap, data| {
                let mut oks = ok.session(&cap);
                let mut errs = err.session(&cap);
                for result in logic(data) {
                    match result {
                        Ok(d) => oks.give(d),
                        Err(e) => errs.give(e),
                    }
                }
            });
        }
    });
    (ok_stream, err_stream)
}
