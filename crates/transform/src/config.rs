//! `[transform]`: how changes become rows.

use std::path::PathBuf;

use serde::Deserialize;

use crate::NumbersMode;

/// `[transform]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    /// How `N` values are laid out in inferred columns.
    #[serde(default)]
    pub numbers: NumbersMode,
    /// Directory of `<table>.avsc` declarations.
    pub schemas_dir: Option<PathBuf>,
}
