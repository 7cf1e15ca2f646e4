//! `exponent_bits`: what it means here. The codec stores every float's
//! exponent whole (the exponent channel is lossless), so no setting can
//! decode fewer exponent bits; the field states the exponent width the
//! caller expects of the weights (8 for F32 and BF16, 5 for F16, as the
//! design's `exponent_bits = 8` describes float32), and a run refuses a
//! container whose float tensors have another, before decoding anything.
//! Unset, any float type decodes.

use super::Config;
use crate::error::{Error, Result};
use crate::format::Container;

impl Config {
    /// Refuses decoding the float tensors of `c` (or only tensor `only`)
    /// when `exponent_bits` is set and one of them has an exponent of
    /// another width, naming the tensor, its dtype and both widths.
    pub fn check_exponent_bits(&self, c: &Container, only: impl Fn(usize) -> bool) -> Result<()> {
        let Some(want) = self.exponent_bits else {
            return Ok(());
        };
        let tensors = c.header().tensors.iter().enumerate();
        for (_, t) in tensors.filter(|(i, _)| only(*i)) {
            let Some(kind) = crate::codec::FloatKind::from_name(&t.dtype) else {
                continue;
            };
            if kind.exp_bits() != want {
                return Err(Error::InvalidArgument(format!(
                    "exponent_bits = {want}: {}: tensor '{}' is {}, whose exponent has {} bits. \
                     Exponents are always decoded whole (the exponent channel is lossless), so \
                     exponent_bits only states the width the weights must have (8 for F32 and \
                     BF16, 5 for F16); unset it to decode any float type",
                    c.path().display(),
                    t.name,
                    t.dtype,
                    kind.exp_bits()
                )));
            }
        }
        Ok(())
    }
}
