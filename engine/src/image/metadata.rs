//! The per-image `.meta` file (Sarus format): what `run` needs from the OCI image config.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Sarus writes these keys in PascalCase, as in the OCI image config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `NAME=VALUE` entries, in image order.
    #[serde(default)]
    pub env: Vec<String>,
    /// Informational only: labels never enable hooks or change security settings.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// egret extension: the image ID (hex sha256 of the image config), shown by `images`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// egret extension: `os/architecture[/variant]` from the image config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

impl ImageMeta {
    /// Image env as (name, value) pairs; entries without `=` are ignored.
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .filter_map(|e| {
                e.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect()
    }
}
