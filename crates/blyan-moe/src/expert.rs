//! Expert identities, an expert's weights, and the names of every tensor of the architecture.

use tch::Tensor;

use crate::config::{Config, EXPERTS_MAX, LAYERS_MAX};
use crate::error::Result;

/// The chain's expert identity, `layer{L}.expert{E}`: the name an expert's block carries.
pub use blyan_chain::ExpertName;

// Every expert of a valid configuration has a chain name.
const _: () = assert!(
    LAYERS_MAX - 1 <= blyan_chain::EXPERT_LAYER_INDEX_MAX
        && EXPERTS_MAX - 1 <= blyan_chain::EXPERT_INDEX_MAX
);

/// The name of expert `expert` of layer `layer`, for indices a valid [`Config`] allows.
pub(crate) fn expert_name(layer: u32, expert: u32) -> ExpertName {
    ExpertName::new(layer, expert)
        .expect("LAYERS_MAX and EXPERTS_MAX keep a valid config's indices within ExpertName's")
}

/// Every expert of a valid configuration, layer by layer, in ascending order.
pub fn experts_of(config: &Config) -> Vec<ExpertName> {
    (0..config.num_hidden_layers)
        .flat_map(|layer| {
            (0..config.num_local_experts).map(move |expert| expert_name(layer, expert))
        })
        .collect()
}

/// The three matrices of one SwiGLU expert, as the model computes with them.
///
/// `w1` (gate) and `w3` (up) are `[intermediate, hidden]`, `w2` (down) is
/// `[hidden, intermediate]`: `w2 · (silu(w1 · x) ⊙ w3 · x)`.
#[derive(Debug)]
pub struct ExpertWeights {
    /// Gate projection.
    pub w1: Tensor,
    /// Down projection.
    pub w2: Tensor,
    /// Up projection.
    pub w3: Tensor,
}

impl ExpertWeights {
    /// Bytes of tensor data the three matrices hold.
    pub fn bytes(&self) -> u64 {
        [&self.w1, &self.w2, &self.w3]
            .iter()
            .map(|tensor| tensor_bytes(tensor))
            .sum()
    }

    /// Handles sharing the same storage: what the cache hands out without copying.
    pub fn shallow_clone(&self) -> Self {
        Self {
            w1: self.w1.shallow_clone(),
            w2: self.w2.shallow_clone(),
            w3: self.w3.shallow_clone(),
        }
    }

    /// Applies the expert to `xs` (`[tokens, hidden]`): the model's own computation, which a
    /// node serving the expert to peers runs too.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // current_hidden_states = self.act_fn(gate) * up
        let gate = xs.f_linear::<Tensor>(&self.w1, None)?.f_silu()?;
        let up = xs.f_linear::<Tensor>(&self.w3, None)?;
        Ok(gate.f_mul(&up)?.f_linear::<Tensor>(&self.w2, None)?)
    }
}

/// Bytes of data a tensor holds.
pub(crate) fn tensor_bytes(tensor: &Tensor) -> u64 {
    let elements = u64::try_from(tensor.numel()).unwrap_or(u64::MAX);
    let element_bytes = u64::try_from(tensor.kind().elt_size_in_bytes()).unwrap_or(u64::MAX);
    elements.saturating_mul(element_bytes)
}

/// Which matrix of an expert a tensor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExpertMatrix {
    /// Gate projection `w1`.
    W1,
    /// Down projection `w2`.
    W2,
    /// Up projection `w3`.
    W3,
}

impl ExpertMatrix {
    /// The three, in file order.
    pub const ALL: [ExpertMatrix; 3] = [Self::W1, Self::W2, Self::W3];

    /// `w1`, `w2` or `w3`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::W1 => "w1",
            Self::W2 => "w2",
            Self::W3 => "w3",
        }
    }
}

/// The Hugging Face name of one matrix of one expert.
pub fn expert_tensor_name(id: ExpertName, matrix: ExpertMatrix) -> String {
    format!(
        "model.layers.{}.block_sparse_moe.experts.{}.{}.weight",
        id.layer(),
        id.expert(),
        matrix.as_str()
    )
}

/// The expert and matrix a Hugging Face tensor name denotes, if it is an expert's.
pub fn parse_expert_tensor_name(name: &str) -> Option<(ExpertName, ExpertMatrix)> {
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once(".block_sparse_moe.experts.")?;
    let (expert, rest) = rest.split_once('.')?;
    let matrix = match rest {
        "w1.weight" => ExpertMatrix::W1,
        "w2.weight" => ExpertMatrix::W2,
        "w3.weight" => ExpertMatrix::W3,
        _ => return None,
    };
    let id = ExpertName::parse(&format!("layer{layer}.expert{expert}")).ok()?;
    // Only the canonical spelling: the name must print back to itself.
    (expert_tensor_name(id, matrix) == name).then_some((id, matrix))
}

/// A group of shared (non-expert) tensors that travels as one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SharedGroup {
    /// The token embedding.
    Embedding,
    /// One layer's attention projections and its two norms.
    Attention {
        /// The layer.
        layer: u32,
    },
    /// One layer's router (`block_sparse_moe.gate`).
    Router {
        /// The layer.
        layer: u32,
    },
    /// The final norm and the LM head.
    Head,
}

impl SharedGroup {
    /// The group's name: `embed`, `layer{L}.attention`, `layer{L}.router` or `head`.
    pub fn name(self) -> String {
        match self {
            Self::Embedding => "embed".to_owned(),
            Self::Attention { layer } => format!("layer{layer}.attention"),
            Self::Router { layer } => format!("layer{layer}.router"),
            Self::Head => "head".to_owned(),
        }
    }
}

/// What part of the model a tensor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorRole {
    /// Loaded once: embeddings, attention, norms, routers, LM head.
    Shared(SharedGroup),
    /// Loaded on demand with its expert.
    Expert {
        /// The expert.
        id: ExpertName,
        /// Which of its matrices.
        matrix: ExpertMatrix,
    },
}

/// One parameter the architecture needs: its Hugging Face name, the shape the configuration
/// implies, and its role (which block it travels in). Not a stored tensor: the dtype is the
/// source's (see [`crate::WeightSource::tensor_spec`], which describes a stored one with
/// `blyan_tensorblock::TensorSpec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParameterSpec {
    /// Hugging Face name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub name: String,
    /// Shape the configuration implies.
    pub shape: Vec<u64>,
    /// Where it belongs.
    pub role: TensorRole,
}

/// Every tensor of a Mixtral checkpoint with this configuration, in a fixed order; the
/// configuration is [validated](Config::validate) first.
pub fn parameter_layout(config: &Config) -> Result<Vec<ParameterSpec>> {
    config.validate()?;
    let hidden = u64::from(config.hidden_size);
    let inner = u64::from(config.intermediate_size);
    let vocab = u64::from(config.vocab_size);
    let head_dim = u64::from(config.head_dim());
    let query = u64::from(config.num_attention_heads) * head_dim;
    let key_value = u64::from(config.num_key_value_heads()) * head_dim;
    let experts = u64::from(config.num_local_experts);

    let mut specs = Vec::new();
    let mut shared = |name: String, shape: Vec<u64>, group: SharedGroup| {
        specs.push(ParameterSpec {
            name,
            shape,
            role: TensorRole::Shared(group),
        });
    };
    shared(
        "model.embed_tokens.weight".to_owned(),
        vec![vocab, hidden],
        SharedGroup::Embedding,
    );
    for layer in 0..config.num_hidden_layers {
        let prefix = format!("model.layers.{layer}");
        let attention = SharedGroup::Attention { layer };
        for (name, shape) in [
            ("self_attn.q_proj", vec![query, hidden]),
            ("self_attn.k_proj", vec![key_value, hidden]),
            ("self_attn.v_proj", vec![key_value, hidden]),
            ("self_attn.o_proj", vec![hidden, query]),
            ("input_layernorm", vec![hidden]),
            ("post_attention_layernorm", vec![hidden]),
        ] {
            shared(format!("{prefix}.{name}.weight"), shape, attention);
        }
        shared(
            format!("{prefix}.block_sparse_moe.gate.weight"),
            vec![experts, hidden],
            SharedGroup::Router { layer },
        );
    }
    shared(
        "model.norm.weight".to_owned(),
        vec![hidden],
        SharedGroup::Head,
    );
    if !config.tie_word_embeddings {
        shared(
            "lm_head.weight".to_owned(),
            vec![vocab, hidden],
            SharedGroup::Head,
        );
    }
    for id in experts_of(config) {
        for matrix in ExpertMatrix::ALL {
            let shape = match matrix {
                ExpertMatrix::W1 | ExpertMatrix::W3 => vec![inner, hidden],
                ExpertMatrix::W2 => vec![hidden, inner],
            };
            specs.push(ParameterSpec {
                name: expert_tensor_name(id, matrix),
                shape,
                role: TensorRole::Expert { id, matrix },
            });
        }
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn expert_tensor_names_round_trip(layer in 0u32..LAYERS_MAX, expert in 0u32..EXPERTS_MAX, matrix in 0usize..3) {
            let id = expert_name(layer, expert);
            let matrix = ExpertMatrix::ALL[matrix];
            let name = expert_tensor_name(id, matrix);
            prop_assert_eq!(parse_expert_tensor_name(&name), Some((id, matrix)));
        }
    }

    #[test]
    fn other_tensor_names_are_not_experts() {
        for name in [
            "model.layers.0.self_attn.q_proj.weight",
            "model.layers.0.block_sparse_moe.gate.weight",
            "model.layers.01.block_sparse_moe.experts.1.w1.weight",
            "model.layers.0.block_sparse_moe.experts.1.w4.weight",
            "model.layers.0.block_sparse_moe.experts.1.w1.bias",
            "lm_head.weight",
        ] {
            assert_eq!(parse_expert_tensor_name(name), None, "{name}");
        }
    }

    #[test]
    fn layout_counts_every_tensor_once() {
        let config = Config::seed();
        let layout = parameter_layout(&config).expect("valid");
        let experts = (config.num_hidden_layers * config.num_local_experts * 3) as usize;
        let shared_per_layer = 7;
        assert_eq!(
            layout.len(),
            experts + 3 + shared_per_layer * config.num_hidden_layers as usize
        );
        let mut names: Vec<_> = layout.iter().map(|spec| spec.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), layout.len());
    }

    #[test]
    fn tied_embeddings_have_no_lm_head() {
        let mut config = Config::seed();
        config.tie_word_embeddings = true;
        assert!(
            parameter_layout(&config)
                .expect("valid")
                .iter()
                .all(|spec| spec.name != "lm_head.weight")
        );
    }
}
