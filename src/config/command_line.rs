//! What the command line takes of the configuration. It decodes every chunk
//! once and writes it, so the tensor cache (`enable_caching`,
//! `cache_size_mb`, `SARAPHIS_ENABLE_CPU_CACHE`), which serves repeated
//! reads of one tensor in the library ([`crate::pipeline::Pipeline::decompress_tensor`])
//! and in Python (`safe_open(...).get_tensor`), would hold nothing there: a
//! file or the environment that turns it on or sizes it is refused, naming
//! where it was set. Turning it off (`false`, `0`) says what the command
//! line does, and is accepted.

use std::path::Path;

use super::{Config, ConfigLayer};
use crate::error::{Error, Result};

/// Why the command line refuses a cache setting.
const WHY: &str = "the command line decodes every chunk once and writes it, so \
    nothing would be cached; the tensor cache serves repeated reads of a tensor in the \
    library (Pipeline::decompress_tensor) and in Python (safe_open(...).get_tensor). \
    Remove the setting for the command line";

impl Config {
    /// [`Config::load`] for a command-line run: the same layers, with the
    /// cache refused where it is turned on or sized, and off otherwise.
    pub fn load_for_command_line(file: Option<&Path>, flags: ConfigLayer) -> Result<Config> {
        let mut layer = ConfigLayer::default();
        if let Some(f) = file {
            let from_file = ConfigLayer::from_file(f)?;
            refuse_cache(&from_file, &format!("in {}", f.display()))?;
            layer = layer.over(from_file);
        }
        let env = ConfigLayer::from_env()?;
        refuse_cache(&env, "from SARAPHIS_ENABLE_CPU_CACHE")?;
        refuse_cache(&flags, "from the flags")?;
        layer = layer.over(env).over(flags);
        layer.enable_caching = Some(false);
        layer.resolve()
    }
}

/// Refuses `layer`'s cache settings, saying where they come from (`whence`).
fn refuse_cache(layer: &ConfigLayer, whence: &str) -> Result<()> {
    if layer.enable_caching == Some(true) {
        return Err(Error::InvalidArgument(format!(
            "enable_caching = true ({whence}): {WHY}"
        )));
    }
    if let Some(mb) = layer.cache_size_mb {
        return Err(Error::InvalidArgument(format!(
            "cache_size_mb = {mb} ({whence}): {WHY}"
        )));
    }
    Ok(())
}
