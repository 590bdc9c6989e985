//! The model's hyper-parameters, spelled as Hugging Face's Mixtral `config.json` spells them.

use serde::{Deserialize, Serialize};

use crate::error::{MoeError, Result};

/// Most decoder layers a configuration may declare.
pub const LAYERS_MAX: u32 = 256;
/// Most experts per layer a configuration may declare.
pub const EXPERTS_MAX: u32 = 256;
/// Largest `hidden_size` accepted.
pub const HIDDEN_SIZE_MAX: u32 = 1 << 16;
/// Largest `intermediate_size` (one expert's inner width) accepted.
pub const INTERMEDIATE_SIZE_MAX: u32 = 1 << 18;
/// Largest vocabulary accepted.
pub const VOCAB_SIZE_MAX: u32 = 1 << 20;
/// Most attention heads accepted.
pub const HEADS_MAX: u32 = 1024;
/// Largest `max_position_embeddings` (context length in tokens) accepted.
pub const CONTEXT_TOKENS_MAX: u32 = 1 << 20;
/// Largest `config.json` read, in bytes.
pub const CONFIG_JSON_BYTES_MAX: u64 = 1 << 20;

/// The only architecture this crate runs.
pub const ARCHITECTURE: &str = "MixtralForCausalLM";
/// The `model_type` of that architecture.
pub const MODEL_TYPE: &str = "mixtral";

/// One token id or several, as `eos_token_id` may be either in a Hugging Face config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    /// A single id.
    One(u32),
    /// Several ids.
    Many(Vec<u32>),
}

impl TokenIds {
    /// The ids as a list.
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            Self::One(id) => vec![*id],
            Self::Many(ids) => ids.clone(),
        }
    }
}

/// Rotary embedding parameters (`rope_parameters` in transformers 5 configs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeParameters {
    /// Base of the rotary frequencies.
    pub rope_theta: f64,
    /// Only `"default"` is supported.
    #[serde(default = "default_rope_type")]
    pub rope_type: String,
}

fn default_rope_type() -> String {
    "default".to_owned()
}

/// Hyper-parameters of a Mixtral model, with the field names of Hugging Face's `config.json`.
///
/// Fields this crate does not use are kept in `extra`, so a configuration written back out
/// loses nothing. Parse with [`Config::from_json`], which also [validates](Config::validate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Model classes the checkpoint is for; must contain `MixtralForCausalLM` when present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub architectures: Vec<String>,
    /// Must be `mixtral`.
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// Tokens in the vocabulary (rows of the embedding and of the LM head).
    pub vocab_size: u32,
    /// Width of the residual stream.
    pub hidden_size: u32,
    /// Inner width of one expert's SwiGLU feed-forward.
    pub intermediate_size: u32,
    /// Decoder layers.
    pub num_hidden_layers: u32,
    /// Query heads.
    pub num_attention_heads: u32,
    /// Key/value heads (grouped-query attention); defaults to `num_attention_heads`.
    #[serde(default)]
    pub num_key_value_heads: Option<u32>,
    /// Width of one head; defaults to `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<u32>,
    /// Activation of the experts; only `silu` is supported.
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    /// Longest sequence (prompt plus generated tokens) the model attends to.
    pub max_position_embeddings: u32,
    /// Epsilon of the RMS norms.
    pub rms_norm_eps: f64,
    /// Rotary base as transformers 4 configs write it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// Rotary parameters as transformers 5 configs write them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<RopeParameters>,
    /// Attention window in tokens; `null` attends to the whole context.
    #[serde(default)]
    pub sliding_window: Option<u32>,
    /// Experts each token is routed to (top-k).
    pub num_experts_per_tok: u32,
    /// Experts per layer.
    pub num_local_experts: u32,
    /// Whether the LM head reuses the embedding matrix (then `lm_head.weight` is absent).
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Token that begins a sequence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<u32>,
    /// Token(s) that end a sequence: generation stops on them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<TokenIds>,
    /// Standard deviation of the random initialisation.
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    /// Every other field of the file, kept as it was.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn default_model_type() -> String {
    MODEL_TYPE.to_owned()
}

fn default_hidden_act() -> String {
    "silu".to_owned()
}

fn default_initializer_range() -> f64 {
    0.02
}

impl Config {
    /// Parses and validates a `config.json` document.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let config: Self = serde_json::from_slice(bytes).map_err(MoeError::ConfigJson)?;
        config.validate()?;
        Ok(config)
    }

    /// The document as pretty JSON, the way `save_pretrained` writes it.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(MoeError::ConfigJson)?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// The seed configuration: 4 layers of 8 experts, top-2, small enough to start in seconds.
    ///
    /// Its vocabulary is the byte-level one of [`crate::Tokenizer::byte_level`].
    pub fn seed() -> Self {
        Self {
            architectures: vec![ARCHITECTURE.to_owned()],
            model_type: MODEL_TYPE.to_owned(),
            vocab_size: crate::tokenizer::BYTE_LEVEL_VOCAB_SIZE,
            hidden_size: 128,
            intermediate_size: 256,
            num_hidden_layers: 4,
            num_attention_heads: 4,
            num_key_value_heads: Some(2),
            head_dim: None,
            hidden_act: default_hidden_act(),
            max_position_embeddings: 2048,
            rms_norm_eps: 1e-5,
            rope_theta: None,
            rope_parameters: Some(RopeParameters {
                rope_theta: 10_000.0,
                rope_type: default_rope_type(),
            }),
            sliding_window: None,
            num_experts_per_tok: 2,
            num_local_experts: 8,
            tie_word_embeddings: false,
            bos_token_id: Some(crate::tokenizer::BYTE_LEVEL_BOS_ID),
            eos_token_id: Some(TokenIds::One(crate::tokenizer::BYTE_LEVEL_EOS_ID)),
            initializer_range: 0.02,
            extra: serde_json::Map::new(),
        }
    }

    /// Key/value heads, defaulted as transformers does.
    pub fn num_key_value_heads(&self) -> u32 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of one attention head, defaulted as transformers does.
    pub fn head_dim(&self) -> u32 {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// The rotary base, from whichever field the file used.
    pub fn rope_theta(&self) -> f64 {
        match (&self.rope_parameters, self.rope_theta) {
            (Some(parameters), _) => parameters.rope_theta,
            (None, Some(theta)) => theta,
            // transformers' MixtralConfig default.
            (None, None) => 1e6,
        }
    }

    /// Tokens that end a sequence.
    pub fn eos_token_ids(&self) -> Vec<u32> {
        self.eos_token_id
            .as_ref()
            .map(TokenIds::to_vec)
            .unwrap_or_default()
    }

    /// Checks that the model can run with these values; the error names the first bad field.
    pub fn validate(&self) -> Result<()> {
        let architecture_ok = if self.architectures.is_empty() {
            self.model_type == MODEL_TYPE
        } else {
            self.architectures.iter().any(|name| name == ARCHITECTURE)
        };
        if !architecture_ok || self.model_type != MODEL_TYPE {
            return Err(MoeError::UnsupportedArchitecture {
                found: self.architectures.clone(),
                model_type: self.model_type.clone(),
            });
        }
        check_range("vocab_size", self.vocab_size, 1, VOCAB_SIZE_MAX)?;
        check_range("hidden_size", self.hidden_size, 1, HIDDEN_SIZE_MAX)?;
        check_range(
            "intermediate_size",
            self.intermediate_size,
            1,
            INTERMEDIATE_SIZE_MAX,
        )?;
        check_range("num_hidden_layers", self.num_hidden_layers, 1, LAYERS_MAX)?;
        check_range(
            "num_attention_heads",
            self.num_attention_heads,
            1,
            HEADS_MAX,
        )?;
        check_range(
            "num_key_value_heads",
            self.num_key_value_heads(),
            1,
            self.num_attention_heads,
        )?;
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads())
        {
            return Err(config_error(
                "num_key_value_heads",
                format!(
                    "{} does not divide num_attention_heads {}",
                    self.num_key_value_heads(),
                    self.num_attention_heads
                ),
            ));
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(config_error(
                "num_attention_heads",
                format!(
                    "{} does not divide hidden_size {}",
                    self.num_attention_heads, self.hidden_size
                ),
            ));
        }
        check_range("head_dim", self.head_dim(), 2, HIDDEN_SIZE_MAX)?;
        if !self.head_dim().is_multiple_of(2) {
            return Err(config_error(
                "head_dim",
                format!(
                    "{} is odd; rotary embeddings need an even width",
                    self.head_dim()
                ),
            ));
        }
        check_range(
            "max_position_embeddings",
            self.max_position_embeddings,
            1,
            CONTEXT_TOKENS_MAX,
        )?;
        check_range("num_local_experts", self.num_local_experts, 1, EXPERTS_MAX)?;
        check_range(
            "num_experts_per_tok",
            self.num_experts_per_tok,
            1,
            self.num_local_experts,
        )?;
        if let Some(window) = self.sliding_window {
            check_range("sliding_window", window, 1, CONTEXT_TOKENS_MAX)?;
        }
        if self.hidden_act != "silu" {
            return Err(config_error(
                "hidden_act",
                format!("{:?} is not supported; only \"silu\"", self.hidden_act),
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(config_error(
                "rms_norm_eps",
                format!("{} must be positive and finite", self.rms_norm_eps),
            ));
        }
        let theta = self.rope_theta();
        if !(theta.is_finite() && theta > 0.0) {
            return Err(config_error(
                "rope_theta",
                format!("{theta} must be positive and finite"),
            ));
        }
        if let Some(parameters) = &self.rope_parameters
            && parameters.rope_type != "default"
        {
            return Err(config_error(
                "rope_parameters",
                format!(
                    "rope_type {:?} is not supported; only \"default\"",
                    parameters.rope_type
                ),
            ));
        }
        if let Some(scaling) = self.extra.get("rope_scaling")
            && !scaling.is_null()
        {
            return Err(config_error(
                "rope_scaling",
                format!("{scaling} is not supported; only null"),
            ));
        }
        if !(self.initializer_range.is_finite() && self.initializer_range >= 0.0) {
            return Err(config_error(
                "initializer_range",
                format!("{} must be finite and not negative", self.initializer_range),
            ));
        }
        for (field, ids) in [
            ("bos_token_id", self.bos_token_id.into_iter().collect()),
            ("eos_token_id", self.eos_token_ids()),
        ] {
            if let Some(id) = ids.iter().find(|id| **id >= self.vocab_size) {
                return Err(config_error(
                    field,
                    format!("{id} is outside the vocabulary of {}", self.vocab_size),
                ));
            }
        }
        Ok(())
    }
}

fn config_error(field: &'static str, reason: String) -> MoeError {
    MoeError::Config { field, reason }
}

fn check_range(field: &'static str, value: u32, min: u32, max: u32) -> Result<()> {
    if value < min || value > max {
        return Err(config_error(
            field,
            format!("{value} is outside {min}..={max}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_json() -> serde_json::Value {
        serde_json::json!({
            "architectures": ["MixtralForCausalLM"],
            "model_type": "mixtral",
            "vocab_size": 320,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": null,
            "hidden_act": "silu",
            "max_position_embeddings": 256,
            "rms_norm_eps": 1e-5,
            "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
            "sliding_window": null,
            "num_experts_per_tok": 2,
            "num_local_experts": 8,
            "tie_word_embeddings": false,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "router_aux_loss_coef": 0.001
        })
    }

    fn parse(value: &serde_json::Value) -> Result<Config> {
        Config::from_json(&serde_json::to_vec(value).expect("json"))
    }

    fn refused_field(value: &serde_json::Value) -> &'static str {
        match parse(value) {
            Err(MoeError::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn parses_transformers_5_config_and_keeps_unknown_fields() {
        let config = parse(&tiny_json()).expect("valid");
        assert_eq!(config.head_dim(), 16);
        assert_eq!(config.num_key_value_heads(), 2);
        assert_eq!(config.rope_theta(), 10_000.0);
        assert_eq!(config.eos_token_ids(), vec![2]);
        assert_eq!(config.extra["router_aux_loss_coef"], 0.001);
        let again = Config::from_json(&config.to_json().expect("json")).expect("valid");
        assert_eq!(again, config);
    }

    #[test]
    fn parses_transformers_4_rope_theta_and_eos_list() {
        let mut value = tiny_json();
        value["rope_parameters"] = serde_json::Value::Null;
        value["rope_theta"] = serde_json::json!(1e6);
        value["eos_token_id"] = serde_json::json!([2, 1]);
        let config = parse(&value).expect("valid");
        assert_eq!(config.rope_theta(), 1e6);
        assert_eq!(config.eos_token_ids(), vec![2, 1]);
    }

    #[test]
    fn refuses_other_architectures() {
        let mut value = tiny_json();
        value["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
        value["model_type"] = serde_json::json!("llama");
        assert!(matches!(
            parse(&value),
            Err(MoeError::UnsupportedArchitecture { .. })
        ));
    }

    #[test]
    fn refuses_bad_fields_by_name() {
        let cases: &[(&str, serde_json::Value, &str)] = &[
            (
                "num_key_value_heads",
                serde_json::json!(3),
                "num_key_value_heads",
            ),
            ("hidden_act", serde_json::json!("gelu"), "hidden_act"),
            (
                "num_experts_per_tok",
                serde_json::json!(9),
                "num_experts_per_tok",
            ),
            (
                "num_experts_per_tok",
                serde_json::json!(0),
                "num_experts_per_tok",
            ),
            ("rms_norm_eps", serde_json::json!(0.0), "rms_norm_eps"),
            ("eos_token_id", serde_json::json!(320), "eos_token_id"),
            (
                "rope_parameters",
                serde_json::json!({"rope_theta": 1.0, "rope_type": "yarn"}),
                "rope_parameters",
            ),
            (
                "rope_scaling",
                serde_json::json!({"type": "linear"}),
                "rope_scaling",
            ),
            ("head_dim", serde_json::json!(15), "head_dim"),
        ];
        for (field, value, expected) in cases {
            let mut document = tiny_json();
            document[*field] = value.clone();
            assert_eq!(refused_field(&document), *expected, "{field} = {value}");
        }
    }

    #[test]
    fn layer_and_expert_counts_are_bounded() {
        let mut value = tiny_json();
        value["num_hidden_layers"] = serde_json::json!(LAYERS_MAX);
        parse(&value).expect("the bound itself is accepted");
        value["num_hidden_layers"] = serde_json::json!(LAYERS_MAX + 1);
        assert_eq!(refused_field(&value), "num_hidden_layers");

        let mut value = tiny_json();
        value["num_local_experts"] = serde_json::json!(EXPERTS_MAX);
        parse(&value).expect("the bound itself is accepted");
        value["num_local_experts"] = serde_json::json!(EXPERTS_MAX + 1);
        assert_eq!(refused_field(&value), "num_local_experts");
    }

    #[test]
    fn seed_config_is_valid_and_four_by_eight_top_two() {
        let seed = Config::seed();
        seed.validate().expect("valid");
        assert_eq!(
            (
                seed.num_hidden_layers,
                seed.num_local_experts,
                seed.num_experts_per_tok
            ),
            (4, 8, 2)
        );
    }
}
