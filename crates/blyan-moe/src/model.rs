//! The Mixtral decoder in libtorch: embedding, decoder layers (RMSNorm, rotary grouped-query
//! attention with a KV cache, routed SwiGLU experts), final norm, LM head.
//!
//! Each step mirrors a line of transformers' `modeling_mixtral.py` (quoted where it matters) and
//! uses the same kernels in the same order, so our logits match the reference's in float32.
//! In bf16 or f16 ([`ComputeDtype`]) the steps transformers runs in float32 run in float32 here
//! too: RMSNorm's variance, both softmaxes, the rotary angles, the routing weights; the logits are
//! handed out in float32 whatever the compute dtype.

use std::collections::HashMap;
use std::sync::Arc;

use tch::{Device, Kind, Tensor};

use crate::cache::ExpertCache;
use crate::config::Config;
use crate::device::{ComputeDevice, ComputeDtype};
use crate::error::{MoeError, Result};
use crate::expert::{ExpertName, expert_name};
use crate::remote::{ExpertCall, RemoteExperts};
use crate::weights::{WeightSource, shape_of};

/// How a [`Model`] is placed, in which dtype it computes, and how much memory its experts may
/// take.
#[derive(Debug, Clone, Copy)]
pub struct ModelOptions {
    /// Where to compute (`model.device` in the node's config): the CPU, or a CUDA device, which
    /// [`Model::load`] requires to be present ([`MoeError::CudaUnavailable`] otherwise).
    pub device: ComputeDevice,
    /// The dtype every weight is held and computed in (`model.dtype` in the node's config). On
    /// the CPU, payload tensors stored in it are views of their blocks; others are converted
    /// once, when loaded.
    pub dtype: ComputeDtype,
    /// Byte budget of the expert cache (`cache.expert_bytes_max` in the node's config), counted
    /// in the compute dtype.
    pub expert_bytes_max: u64,
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self {
            device: ComputeDevice::Cpu,
            dtype: ComputeDtype::F32,
            expert_bytes_max: u64::MAX,
        }
    }
}

/// Which positions to compute logits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position (generation).
    Last,
    /// Every position (scoring, parity checks).
    All,
}

/// The keys and values of every position seen so far, per layer: one request's state.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    positions: u32,
}

impl KvCache {
    /// A cache of no layer, standing in for one that was lost with a failed step.
    pub(crate) fn empty() -> Self {
        Self {
            layers: Vec::new(),
            positions: 0,
        }
    }

    /// Positions already processed.
    pub fn positions(&self) -> u32 {
        self.positions
    }
}

/// What [`Model::forward_sequences`] computed.
#[derive(Debug)]
pub struct SequencesOutput {
    /// Float32 logits `[sequences × positions, vocab]`, row-major by sequence.
    pub logits: Tensor,
    /// Each layer's router probabilities `[sequences × positions, experts]` (float32).
    pub probabilities: Vec<Tensor>,
}

/// One request's next token in a batched decoding step ([`Model::forward_batch`]).
#[derive(Debug)]
pub struct DecodeStep<'a> {
    /// The token to feed (the last one generated).
    pub token: u32,
    /// The request's keys and values so far; extended by the step.
    pub cache: &'a mut KvCache,
    /// The request's expert counts; extended by the step.
    pub usage: &'a mut ExpertUsage,
}

/// Which experts answered for a request: tokens routed to each expert of each layer.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct ExpertUsage {
    /// `tokens[layer][expert]`: how many token positions the expert processed.
    pub tokens: Vec<Vec<u32>>,
}

impl ExpertUsage {
    /// No expert used yet, shaped for `config`.
    pub fn new(config: &Config) -> Self {
        Self {
            tokens: vec![
                vec![0; config.num_local_experts as usize];
                config.num_hidden_layers as usize
            ],
        }
    }

    /// The experts that processed at least one token, layer by layer in ascending order.
    pub fn experts(&self) -> Vec<ExpertName> {
        let mut used = Vec::new();
        for (layer, counts) in self.tokens.iter().enumerate() {
            for (expert, count) in counts.iter().enumerate() {
                if *count > 0 {
                    used.push(expert_name(layer as u32, expert as u32));
                }
            }
        }
        used
    }

    fn record(&mut self, layer: u32, expert: usize, tokens: usize) {
        if let Some(count) = self
            .tokens
            .get_mut(layer as usize)
            .and_then(|layer| layer.get_mut(expert))
        {
            *count = count.saturating_add(tokens as u32);
        }
    }
}

#[derive(Debug)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // hidden_states = hidden_states.to(torch.float32)
        // variance = hidden_states.pow(2).mean(-1, keepdim=True)
        // hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        // return self.weight * hidden_states.to(input_dtype)
        let input_kind = xs.kind();
        let xs = xs.f_to_kind(Kind::Float)?;
        let variance = xs
            .f_pow_tensor_scalar(2)?
            .f_mean_dim(-1, true, Kind::Float)?;
        let normed = xs.f_mul(&variance.f_add_scalar(self.eps)?.f_rsqrt()?)?;
        Ok(self.weight.f_mul(&normed.f_to_kind(input_kind)?)?)
    }
}

#[derive(Debug)]
struct Attention {
    q_proj: Tensor,
    k_proj: Tensor,
    v_proj: Tensor,
    o_proj: Tensor,
    head_dim: i64,
    key_value_groups: i64,
    scaling: f64,
}

fn rotate_half(xs: &Tensor) -> Result<Tensor> {
    // x1 = x[..., : x.shape[-1] // 2]; x2 = x[..., x.shape[-1] // 2 :]
    // return torch.cat((-x2, x1), dim=-1)
    let half = xs.size().last().copied().unwrap_or(0) / 2;
    let first = xs.f_narrow(-1, 0, half)?;
    let second = xs.f_narrow(-1, half, half)?;
    Ok(Tensor::f_cat(&[second.f_neg()?, first], -1)?)
}

fn repeat_kv(xs: &Tensor, groups: i64) -> Result<Tensor> {
    if groups == 1 {
        return Ok(xs.shallow_clone());
    }
    // hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen, head_dim)
    //     .reshape(batch, num_key_value_heads * n_rep, slen, head_dim)
    let [batch, heads, positions, width] = four_dims(xs)?;
    Ok(xs
        .f_unsqueeze(2)?
        .f_expand([batch, heads, groups, positions, width], false)?
        .f_reshape([batch, heads * groups, positions, width])?)
}

fn four_dims(xs: &Tensor) -> Result<[i64; 4]> {
    let size = xs.size();
    <[i64; 4]>::try_from(size.as_slice()).map_err(|_| {
        MoeError::Torch(tch::TchError::Shape(format!(
            "expected a 4-dimensional tensor, got {size:?}"
        )))
    })
}

impl Attention {
    /// Queries, keys and values of `xs` (`[batch, positions, hidden]`), rotated: `[batch,
    /// heads, positions, head_dim]` each (keys and values with the key-value heads).
    fn project(&self, xs: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<[Tensor; 3]> {
        let size = xs.size();
        let (batch, positions) = (size[0], size[1]);
        // query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        let project = |weight: &Tensor| -> Result<Tensor> {
            Ok(xs
                .f_linear::<Tensor>(weight, None)?
                .f_view([batch, positions, -1, self.head_dim])?
                .f_transpose(1, 2)?)
        };
        // q_embed = (q * cos) + (rotate_half(q) * sin)
        let rotate = |xs: &Tensor| -> Result<Tensor> {
            Ok(xs.f_mul(cos)?.f_add(&rotate_half(xs)?.f_mul(sin)?)?)
        };
        Ok([
            rotate(&project(&self.q_proj)?)?,
            rotate(&project(&self.k_proj)?)?,
            project(&self.v_proj)?,
        ])
    }

    /// Eager attention of `query` over every cached position plus the new ones (`key`,
    /// `value`): `[batch, positions, heads × head_dim]`, before the output projection.
    fn attend(
        &self,
        query: &Tensor,
        key: &Tensor,
        value: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let size = query.size();
        let (batch, positions) = (size[0], size[2]);
        let key = repeat_kv(key, self.key_value_groups)?;
        let value = repeat_kv(value, self.key_value_groups)?;
        // attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
        let mut weights = query
            .f_matmul(&key.f_transpose(2, 3)?)?
            .f_mul_scalar(self.scaling)?;
        if let Some(mask) = mask {
            // The mask is float32, so a bf16 or f16 score is promoted by the addition;
            // transformers adds one in the compute dtype (its minimum), and the float32
            // softmax gives the masked positions the same zero weight either way.
            weights = weights.f_add(mask)?;
        }
        // softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
        let weights = weights
            .f_softmax(-1, Kind::Float)?
            .f_to_kind(query.kind())?;
        // attn_output.transpose(1, 2).contiguous(); attn_output.reshape(*input_shape, -1)
        Ok(weights
            .f_matmul(&value)?
            .f_transpose(1, 2)?
            .f_contiguous()?
            .f_reshape([batch, positions, -1])?)
    }

    fn forward(
        &self,
        xs: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut Option<(Tensor, Tensor)>,
    ) -> Result<Tensor> {
        let [query, key, value] = self.project(xs, cos, sin)?;
        let (key, value) = extend(cache.take(), key, value)?;
        *cache = Some((key.shallow_clone(), value.shallow_clone()));
        let output = self.attend(&query, &key, &value, mask)?;
        Ok(output.f_linear::<Tensor>(&self.o_proj, None)?)
    }
}

/// The cached keys and values followed by the new ones (along the positions).
fn extend(past: Option<(Tensor, Tensor)>, key: Tensor, value: Tensor) -> Result<(Tensor, Tensor)> {
    Ok(match past {
        Some((past_key, past_value)) => (
            Tensor::f_cat(&[past_key, key], 2)?,
            Tensor::f_cat(&[past_value, value], 2)?,
        ),
        None => (key, value),
    })
}

#[derive(Debug)]
struct DecoderLayer {
    index: u32,
    attention: Attention,
    router: Tensor,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

/// The experts each token goes to, chosen deterministically.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Routing {
    /// `rows[e]`: the token rows routed to expert `e`, ascending.
    pub(crate) rows: Vec<Vec<i64>>,
}

impl Routing {
    /// `[tokens × experts]` with 1 where the token goes to the expert and 0 elsewhere.
    fn chosen_mask(&self, tokens: usize) -> Vec<f32> {
        let experts = self.rows.len();
        let mut mask = vec![0f32; tokens * experts];
        for (expert, rows) in self.rows.iter().enumerate() {
            for row in rows {
                mask[*row as usize * experts + expert] = 1.0;
            }
        }
        mask
    }
}

/// Top-k over each row of `probabilities` (`[tokens × experts]`, row-major).
///
/// Order is by `total_cmp`, descending, ties to the lower expert index, so the choice is the
/// same on every machine.
pub(crate) fn route(probabilities: &[f32], experts: usize, top_k: usize) -> Routing {
    let mut rows = vec![Vec::new(); experts];
    let mut order: Vec<usize> = Vec::with_capacity(experts);
    for (row, probabilities) in probabilities.chunks_exact(experts).enumerate() {
        order.clear();
        order.extend(0..experts);
        // Stable sort: equal probabilities keep ascending expert order.
        order.sort_by(|a, b| probabilities[*b].total_cmp(&probabilities[*a]));
        for expert in &order[..top_k] {
            rows[*expert].push(row as i64);
        }
    }
    Routing { rows }
}

/// What one layer's mixture of experts computed.
#[derive(Debug)]
pub(crate) struct MoeOutput {
    /// The weighted sum of the chosen experts' outputs, shaped like the input.
    pub(crate) mixed: Tensor,
    /// Which rows went to which expert, for the caller to count.
    pub(crate) routing: Routing,
    /// The router's softmax `[tokens, experts]` (float32): what the load-balancing loss reads.
    pub(crate) probabilities: Tensor,
}

impl DecoderLayer {
    /// The routed experts' mixture for every position of `xs`.
    ///
    /// The choice of experts is made on the CPU (deterministic, see [`route`]); their weights
    /// are computed as tensors from the router's probabilities, so a backward pass reaches the
    /// router as in transformers.
    fn moe(
        &self,
        xs: &Tensor,
        experts: &mut ExpertCache,
        remote: Option<&dyn RemoteExperts>,
        top_k: usize,
    ) -> Result<MoeOutput> {
        let size = xs.size();
        let hidden = size[2];
        let flat = xs.f_reshape([-1, hidden])?;
        let tokens = flat.size()[0] as usize;
        // router_logits = F.linear(hidden_states, self.weight)
        // router_probs = torch.nn.functional.softmax(router_logits.float(), dim=-1)
        let probabilities = flat
            .f_linear::<Tensor>(&self.router, None)?
            .f_softmax(-1, Kind::Float)?;
        let expert_count = probabilities.size()[1] as usize;
        let on_cpu = Vec::<f32>::try_from(
            probabilities
                .f_detach()?
                .f_to_device(Device::Cpu)?
                .f_flatten(0, -1)?,
        )?;
        let routing = route(&on_cpu, expert_count, top_k);

        let device = xs.device();
        // router_top_value /= router_top_value.sum(dim=-1, keepdim=True): the unchosen
        // probabilities are zeroed, so the sum is the chosen ones' alone.
        let chosen = Tensor::f_from_slice(&routing.chosen_mask(tokens))?
            .f_view([tokens as i64, expert_count as i64])?
            .f_to_device(device)?;
        let chosen = probabilities.f_mul(&chosen)?;
        let renormalised = chosen.f_div(&chosen.f_sum_dim_intlist(-1, true, Kind::Float)?)?;
        let mut output = flat.f_zeros_like()?;
        let rows_tensors = routing
            .rows
            .iter()
            .map(|rows| Ok(Tensor::f_from_slice(rows)?.f_to_device(device)?))
            .collect::<Result<Vec<_>>>()?;
        // Every remote expert's rows first, in one call for the layer; then every expert mixed
        // in ascending order, local or remote alike, so the sum is the local run's.
        let mut remote_outputs = self.call_remote(remote, &flat, &routing, &rows_tensors)?;
        // for expert_idx in expert_hit: ... final_hidden_states.index_add_(0, token_idx, ...)
        for (expert, rows) in routing.rows.iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            let rows_tensor = &rows_tensors[expert];
            let output_rows = match remote_outputs.remove(&expert) {
                Some(computed) => computed,
                None => {
                    let weights = experts.get(expert_name(self.index, expert as u32))?;
                    weights.forward(&flat.f_index_select(0, rows_tensor)?)?
                }
            };
            let scale = renormalised
                .f_index_select(0, rows_tensor)?
                .f_select(1, expert as i64)?
                .f_unsqueeze(1)?
                .f_to_kind(flat.kind())?;
            // current_hidden_states = current_hidden_states * top_k_weights[token_idx, top_k_pos, None]
            let contribution = output_rows.f_mul(&scale)?;
            // In place (autograd records it); the returned handle is `output` itself.
            let _ = output.f_index_add_(0, rows_tensor, &contribution)?;
        }
        Ok(MoeOutput {
            mixed: output.f_reshape(size.as_slice())?,
            routing,
            probabilities,
        })
    }
}

impl DecoderLayer {
    /// The outputs of the routed experts `remote` computes, by expert index: one
    /// [`RemoteExperts::call_layer`] for the whole layer, each answer checked against its
    /// input's shape. Empty without a hook or when no routed expert is remote.
    fn call_remote(
        &self,
        remote: Option<&dyn RemoteExperts>,
        flat: &Tensor,
        routing: &Routing,
        rows_tensors: &[Tensor],
    ) -> Result<HashMap<usize, Tensor>> {
        let Some(remote) = remote else {
            return Ok(HashMap::new());
        };
        let mut indices = Vec::new();
        let mut calls = Vec::new();
        for (expert, rows) in routing.rows.iter().enumerate() {
            let id = expert_name(self.index, expert as u32);
            if rows.is_empty() || !remote.is_remote(id) {
                continue;
            }
            let hidden = flat
                .f_index_select(0, &rows_tensors[expert])?
                .f_to_kind(Kind::Float)?
                .f_contiguous()?;
            indices.push(expert);
            calls.push(ExpertCall { expert: id, hidden });
        }
        if calls.is_empty() {
            return Ok(HashMap::new());
        }
        let expected: Vec<Vec<i64>> = calls.iter().map(|call| call.hidden.size()).collect();
        let outputs = remote.call_layer(self.index, calls)?;
        let mut by_expert = HashMap::with_capacity(indices.len());
        for (position, expert) in indices.into_iter().enumerate() {
            let id = expert_name(self.index, expert as u32);
            let missing = || MoeError::RemoteExpert {
                expert: id,
                reason: "the hook returned fewer outputs than calls".into(),
            };
            let output = outputs.get(position).ok_or_else(missing)?;
            if output.size() != expected[position] {
                return Err(MoeError::RemoteShape {
                    expert: id,
                    got: output.size(),
                    expected: expected[position].clone(),
                });
            }
            by_expert.insert(
                expert,
                output.f_to_kind(flat.kind())?.f_to_device(flat.device())?,
            );
        }
        Ok(by_expert)
    }
}

/// A Mixtral model: shared weights held once, experts through an [`ExpertCache`].
///
/// One instance serves one forward pass at a time (`&mut self`): libtorch tensors are not
/// `Sync`, and the expert cache changes on every step. [`crate::Generator`] shares a model
/// between requests behind a lock held for one step.
#[derive(Debug)]
pub struct Model {
    config: Config,
    device: Device,
    /// The compute dtype's kind: every weight, activation and cached key and value.
    kind: Kind,
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Tensor,
    inv_freq: Tensor,
    experts: ExpertCache,
    remote: Option<Arc<dyn RemoteExperts>>,
    source_description: String,
}

impl Model {
    /// Loads the shared weights of `config` from `source` once, in the compute dtype on the
    /// compute device of `options`; experts load on demand, the same way.
    ///
    /// Every shared tensor is checked against the shape `config` implies. A CUDA device this
    /// machine lacks is [`MoeError::CudaUnavailable`], before any weight is read.
    pub fn load(
        config: &Config,
        source: Arc<dyn WeightSource>,
        options: ModelOptions,
    ) -> Result<Self> {
        config.validate()?;
        options.device.check_available()?;
        let device = options.device.torch();
        let kind = options.dtype.kind();
        let hidden = i64::from(config.hidden_size);
        let head_dim = i64::from(config.head_dim());
        let heads = i64::from(config.num_attention_heads);
        let key_value_heads = i64::from(config.num_key_value_heads());
        let vocab = i64::from(config.vocab_size);
        let shared = |name: &str, shape: &[i64]| -> Result<Tensor> {
            let tensor = source.tensor(name)?;
            let got = shape_of(&tensor);
            let expected: Vec<u64> = shape.iter().map(|d| *d as u64).collect();
            if got != expected {
                return Err(MoeError::WrongShape {
                    name: name.to_owned(),
                    got,
                    expected,
                });
            }
            // The same storage when the dtype and device already match: no copy.
            Ok(tensor.f_to_kind(kind)?.f_to_device(device)?)
        };
        let norm = |name: &str| -> Result<RmsNorm> {
            Ok(RmsNorm {
                weight: shared(name, &[hidden])?,
                eps: config.rms_norm_eps,
            })
        };

        let embed_tokens = shared("model.embed_tokens.weight", &[vocab, hidden])?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers as usize);
        for index in 0..config.num_hidden_layers {
            let prefix = format!("model.layers.{index}");
            let attention = Attention {
                q_proj: shared(
                    &format!("{prefix}.self_attn.q_proj.weight"),
                    &[heads * head_dim, hidden],
                )?,
                k_proj: shared(
                    &format!("{prefix}.self_attn.k_proj.weight"),
                    &[key_value_heads * head_dim, hidden],
                )?,
                v_proj: shared(
                    &format!("{prefix}.self_attn.v_proj.weight"),
                    &[key_value_heads * head_dim, hidden],
                )?,
                o_proj: shared(
                    &format!("{prefix}.self_attn.o_proj.weight"),
                    &[hidden, heads * head_dim],
                )?,
                head_dim,
                key_value_groups: heads / key_value_heads,
                // self.scaling = self.head_dim**-0.5
                scaling: (head_dim as f64).powf(-0.5),
            };
            layers.push(DecoderLayer {
                index,
                attention,
                router: shared(
                    &format!("{prefix}.block_sparse_moe.gate.weight"),
                    &[i64::from(config.num_local_experts), hidden],
                )?,
                input_layernorm: norm(&format!("{prefix}.input_layernorm.weight"))?,
                post_attention_layernorm: norm(&format!(
                    "{prefix}.post_attention_layernorm.weight"
                ))?,
            });
        }
        let final_norm = norm("model.norm.weight")?;
        let lm_head = if config.tie_word_embeddings {
            embed_tokens.shallow_clone()
        } else {
            shared("lm_head.weight", &[vocab, hidden])?
        };

        // inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
        let exponents = Tensor::f_arange_start_step(0, head_dim, 2, (Kind::Float, Device::Cpu))?
            .f_div_scalar(head_dim)?;
        let inv_freq = Tensor::f_pow_scalar(config.rope_theta(), &exponents)?
            .f_reciprocal()?
            .f_to_device(device)?;

        let source_description = source.describe();
        let experts = ExpertCache::new(
            source,
            config.hidden_size,
            config.intermediate_size,
            kind,
            device,
            options.expert_bytes_max,
        );
        tracing::info!(
            source = %source_description,
            device = %options.device,
            dtype = %options.dtype,
            layers = config.num_hidden_layers,
            experts = config.num_local_experts,
            top_k = config.num_experts_per_tok,
            "model loaded"
        );
        Ok(Self {
            config: config.clone(),
            device,
            kind,
            embed_tokens,
            layers,
            norm: final_norm,
            lm_head,
            inv_freq,
            experts,
            remote: None,
            source_description,
        })
    }

    /// The configuration the model runs.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where the model computes.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The kind every weight and activation is held in (the compute dtype's).
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// What the weights are and where they came from, for logs.
    pub fn source_description(&self) -> &str {
        &self.source_description
    }

    /// The expert cache (its metrics, its budget).
    pub fn expert_cache(&self) -> &ExpertCache {
        &self.experts
    }

    /// The expert cache, to change its budget or clear it.
    pub fn expert_cache_mut(&mut self) -> &mut ExpertCache {
        &mut self.experts
    }

    /// Computes the experts `remote` claims ([`RemoteExperts::is_remote`]) through it instead
    /// of the expert cache, which then never loads them; `None` computes every expert locally.
    /// The outputs are mixed as local ones are, so a faithful hook changes no bit of the
    /// logits. A training pass's gradients do not flow into remote experts.
    pub fn set_remote_experts(&mut self, remote: Option<Arc<dyn RemoteExperts>>) {
        self.remote = remote;
    }

    /// The hook for remote experts, if one is set.
    pub fn remote_experts(&self) -> Option<&Arc<dyn RemoteExperts>> {
        self.remote.as_ref()
    }

    /// An empty KV cache for a new request.
    pub fn new_kv_cache(&self) -> KvCache {
        KvCache {
            layers: (0..self.config.num_hidden_layers).map(|_| None).collect(),
            positions: 0,
        }
    }

    /// Runs `tokens` (the positions after those already in `cache`) through the model, appends
    /// their keys and values to `cache`, records the experts used in `usage`, and returns the
    /// float32 logits `[positions, vocab]` (one row for [`Logits::Last`]).
    pub fn forward(
        &mut self,
        tokens: &[u32],
        cache: &mut KvCache,
        usage: &mut ExpertUsage,
        logits: Logits,
    ) -> Result<Tensor> {
        self.check_tokens(cache, tokens)?;
        let past = i64::from(cache.positions);
        let count = tokens.len() as i64;

        let ids: Vec<i64> = tokens.iter().map(|id| i64::from(*id)).collect();
        let ids = Tensor::f_from_slice(&ids)?
            .f_to_device(self.device)?
            .f_unsqueeze(0)?;
        let mut xs = Tensor::f_embedding(&self.embed_tokens, &ids, -1, false, false)?;

        let (cos, sin) = self.rotary(past, count)?;
        let mask = self.attention_mask(past, count)?;

        let top_k = self.config.num_experts_per_tok as usize;
        for (layer, layer_cache) in self.layers.iter().zip(cache.layers.iter_mut()) {
            let residual = &xs;
            let normed = layer.input_layernorm.forward(residual)?;
            let attended =
                layer
                    .attention
                    .forward(&normed, &cos, &sin, mask.as_ref(), layer_cache)?;
            let hidden = residual.f_add(&attended)?;
            let normed = layer.post_attention_layernorm.forward(&hidden)?;
            let moe = layer.moe(&normed, &mut self.experts, self.remote.as_deref(), top_k)?;
            for (expert, rows) in moe.routing.rows.iter().enumerate() {
                usage.record(layer.index, expert, rows.len());
            }
            xs = hidden.f_add(&moe.mixed)?;
        }
        cache.positions += tokens.len() as u32;

        let xs = self.norm.forward(&xs)?.f_squeeze_dim(0)?;
        let xs = match logits {
            Logits::Last => xs.f_narrow(0, count - 1, 1)?,
            Logits::All => xs,
        };
        // logits = self.lm_head(hidden_states); the caller's `.float()` done here.
        Ok(xs
            .f_linear::<Tensor>(&self.lm_head, None)?
            .f_to_kind(Kind::Float)?)
    }

    /// The training forward pass: `batch` sequences of `positions` tokens each (`tokens` is
    /// their concatenation, row-major), every position attending causally to its own sequence,
    /// no KV cache. The same layers, kernels and routing as [`Model::forward`]; what differs is
    /// only that all sequences start at position 0 together.
    ///
    /// Returns the float32 logits `[batch × positions, vocab]` and each layer's router
    /// probabilities, and adds the tokens each expert processed to `usage`. Run it with
    /// trainable tensors (see `crate::train`) and a backward pass from the loss reaches them.
    pub fn forward_sequences(
        &mut self,
        tokens: &[u32],
        batch: usize,
        usage: &mut ExpertUsage,
    ) -> Result<SequencesOutput> {
        if batch == 0 || tokens.is_empty() || !tokens.len().is_multiple_of(batch) {
            return Err(MoeError::EmptyPrompt);
        }
        let positions = tokens.len() / batch;
        let empty = self.new_kv_cache();
        self.check_tokens(&empty, &tokens[..positions])?;
        let vocab_size = self.config.vocab_size;
        if let Some(id) = tokens.iter().find(|id| **id >= vocab_size) {
            return Err(MoeError::TokenOutOfRange {
                id: *id,
                vocab_size,
            });
        }
        let (batch, count) = (batch as i64, positions as i64);
        let ids: Vec<i64> = tokens.iter().map(|id| i64::from(*id)).collect();
        let ids = Tensor::f_from_slice(&ids)?
            .f_to_device(self.device)?
            .f_view([batch, count])?;
        let mut xs = Tensor::f_embedding(&self.embed_tokens, &ids, -1, false, false)?;

        let (cos, sin) = self.rotary(0, count)?;
        let mask = self.attention_mask(0, count)?;

        let top_k = self.config.num_experts_per_tok as usize;
        let mut probabilities = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let normed = layer.input_layernorm.forward(&xs)?;
            let mut no_cache = None;
            let attended =
                layer
                    .attention
                    .forward(&normed, &cos, &sin, mask.as_ref(), &mut no_cache)?;
            let hidden = xs.f_add(&attended)?;
            let normed = layer.post_attention_layernorm.forward(&hidden)?;
            let moe = layer.moe(&normed, &mut self.experts, self.remote.as_deref(), top_k)?;
            for (expert, rows) in moe.routing.rows.iter().enumerate() {
                usage.record(layer.index, expert, rows.len());
            }
            probabilities.push(moe.probabilities);
            xs = hidden.f_add(&moe.mixed)?;
        }
        let hidden = i64::from(self.config.hidden_size);
        let logits = self
            .norm
            .forward(&xs)?
            .f_reshape([-1, hidden])?
            .f_linear::<Tensor>(&self.lm_head, None)?
            .f_to_kind(Kind::Float)?;
        Ok(SequencesOutput {
            logits,
            probabilities,
        })
    }

    /// The rotary cosines and sines of `count` positions after `past`, each `[1, 1, count,
    /// head_dim]`, shared by every sequence of a batch.
    fn rotary(&self, past: i64, count: i64) -> Result<(Tensor, Tensor)> {
        // freqs = position_ids[..., None].float() * self.inv_freq; emb = torch.cat((freqs, freqs), dim=-1)
        let positions = Tensor::f_arange_start(past, past + count, (Kind::Float, self.device))?;
        let freqs = positions
            .f_unsqueeze(1)?
            .f_mul(&self.inv_freq.f_unsqueeze(0)?)?;
        let angles = Tensor::f_cat(&[&freqs, &freqs], -1)?;
        // return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype); then
        // cos.unsqueeze(unsqueeze_dim): [1, 1, positions, head_dim]
        Ok((
            angles
                .f_cos()?
                .f_to_kind(self.kind)?
                .f_unsqueeze(0)?
                .f_unsqueeze(0)?,
            angles
                .f_sin()?
                .f_to_kind(self.kind)?
                .f_unsqueeze(0)?
                .f_unsqueeze(0)?,
        ))
    }

    /// Refuses an empty feed, a token outside the vocabulary, or a feed past the context.
    fn check_tokens(&self, cache: &KvCache, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Err(MoeError::EmptyPrompt);
        }
        let vocab_size = self.config.vocab_size;
        if let Some(id) = tokens.iter().find(|id| **id >= vocab_size) {
            return Err(MoeError::TokenOutOfRange {
                id: *id,
                vocab_size,
            });
        }
        let past = u64::from(cache.positions);
        let count = tokens.len() as u64;
        let context_max = u64::from(self.config.max_position_embeddings);
        if past + count > context_max {
            return Err(MoeError::ContextTooLong {
                prompt_tokens: past,
                max_tokens: count,
                context_tokens_max: context_max,
            });
        }
        Ok(())
    }

    /// One decoding step of several requests at once: each [`DecodeStep`] feeds one token after
    /// the positions in its own cache. Returns the float32 logits `[steps, vocab]`, row `i` for
    /// `steps[i]`, equal (within float rounding of the larger matrix products) to what
    /// [`Model::forward`] gives each request alone.
    ///
    /// What batching saves: every projection, router and expert runs once for all requests, so
    /// each expert's weights are read once per step however many requests route to it. The
    /// attention over each request's own past runs request by request (their lengths differ).
    ///
    /// On an error (a missing expert, a bad token) no cache and no usage is changed, so each
    /// request can be run alone to find whose it was.
    pub fn forward_batch(&mut self, steps: &mut [DecodeStep<'_>]) -> Result<Tensor> {
        if steps.is_empty() {
            return Err(MoeError::EmptyPrompt);
        }
        for step in steps.iter() {
            self.check_tokens(step.cache, std::slice::from_ref(&step.token))?;
        }
        let batch = steps.len() as i64;
        let ids: Vec<i64> = steps.iter().map(|step| i64::from(step.token)).collect();
        let ids = Tensor::f_from_slice(&ids)?
            .f_to_device(self.device)?
            .f_unsqueeze(1)?;
        // [batch, 1, hidden]
        let mut xs = Tensor::f_embedding(&self.embed_tokens, &ids, -1, false, false)?;

        // Each request's own position: cos and sin are [batch, 1, 1, head_dim].
        let pasts: Vec<f32> = steps
            .iter()
            .map(|step| step.cache.positions as f32)
            .collect();
        let positions = Tensor::f_from_slice(&pasts)?.f_to_device(self.device)?;
        let freqs = positions
            .f_unsqueeze(1)?
            .f_mul(&self.inv_freq.f_unsqueeze(0)?)?;
        let angles = Tensor::f_cat(&[&freqs, &freqs], -1)?;
        let cos = angles
            .f_cos()?
            .f_to_kind(self.kind)?
            .f_unsqueeze(1)?
            .f_unsqueeze(1)?;
        let sin = angles
            .f_sin()?
            .f_to_kind(self.kind)?
            .f_unsqueeze(1)?
            .f_unsqueeze(1)?;
        let masks = steps
            .iter()
            .map(|step| self.attention_mask(i64::from(step.cache.positions), 1))
            .collect::<Result<Vec<_>>>()?;

        let top_k = self.config.num_experts_per_tok as usize;
        // New keys and values per layer and request, and expert counts per request: committed
        // only once every layer succeeded.
        let mut new_caches: Vec<Vec<(Tensor, Tensor)>> = Vec::with_capacity(self.layers.len());
        let mut counts: Vec<(u32, usize, usize)> = Vec::new();
        for (index, layer) in self.layers.iter().enumerate() {
            let residual = &xs;
            let normed = layer.input_layernorm.forward(residual)?;
            let [query, key, value] = layer.attention.project(&normed, &cos, &sin)?;
            let mut outputs = Vec::with_capacity(steps.len());
            let mut layer_caches = Vec::with_capacity(steps.len());
            for (row, step) in steps.iter().enumerate() {
                let row = row as i64;
                let past = step.cache.layers[index]
                    .as_ref()
                    .map(|(key, value)| (key.shallow_clone(), value.shallow_clone()));
                let (key, value) =
                    extend(past, key.f_narrow(0, row, 1)?, value.f_narrow(0, row, 1)?)?;
                outputs.push(layer.attention.attend(
                    &query.f_narrow(0, row, 1)?,
                    &key,
                    &value,
                    masks[row as usize].as_ref(),
                )?);
                layer_caches.push((key, value));
            }
            let attended =
                Tensor::f_cat(&outputs, 0)?.f_linear::<Tensor>(&layer.attention.o_proj, None)?;
            new_caches.push(layer_caches);
            let hidden = residual.f_add(&attended)?;
            let normed = layer.post_attention_layernorm.forward(&hidden)?;
            let moe = layer.moe(&normed, &mut self.experts, self.remote.as_deref(), top_k)?;
            for (expert, rows) in moe.routing.rows.iter().enumerate() {
                counts.extend(rows.iter().map(|row| (layer.index, expert, *row as usize)));
            }
            xs = hidden.f_add(&moe.mixed)?;
        }
        let logits = self
            .norm
            .forward(&xs)?
            .f_reshape([batch, -1])?
            .f_linear::<Tensor>(&self.lm_head, None)?
            .f_to_kind(Kind::Float)?;

        for (index, layer_caches) in new_caches.into_iter().enumerate() {
            for (step, cache) in steps.iter_mut().zip(layer_caches) {
                step.cache.layers[index] = Some(cache);
            }
        }
        for step in steps.iter_mut() {
            step.cache.positions += 1;
        }
        for (layer, expert, row) in counts {
            steps[row].usage.record(layer, expert, 1);
        }
        Ok(logits)
    }

    /// The additive causal (and sliding-window) mask for `count` new positions after `past`,
    /// `[count, past + count]` with 0 where attention is allowed and the float minimum where
    /// not, as transformers builds it for eager attention; `None` when nothing is masked.
    fn attention_mask(&self, past: i64, count: i64) -> Result<Option<Tensor>> {
        let total = past + count;
        let window = self.config.sliding_window.map(i64::from);
        let windowed = window.is_some_and(|window| total > window);
        if count == 1 && !windowed {
            return Ok(None);
        }
        let mut values = vec![0f32; (count * total) as usize];
        for row in 0..count {
            let query = past + row;
            for key in 0..total {
                let hidden = key > query || window.is_some_and(|window| key <= query - window);
                if hidden {
                    values[(row * total + key) as usize] = f32::MIN;
                }
            }
        }
        Ok(Some(
            Tensor::f_from_slice(&values)?
                .f_view([count, total])?
                .f_to_device(self.device)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::RandomInit;

    #[test]
    fn routing_is_top_k_with_stable_ties() {
        // Token 0: experts 2 and 0; token 1: a three-way tie keeps the lowest indices 0 and 1.
        let probabilities = [0.3, 0.1, 0.6, 0.0, 0.25, 0.25, 0.25, 0.25];
        let routing = route(&probabilities, 4, 2);
        assert_eq!(routing.rows, vec![vec![0, 1], vec![1], vec![0], vec![]]);
        #[rustfmt::skip]
        let expected = [1.0, 0.0, 1.0, 0.0,  1.0, 1.0, 0.0, 0.0];
        assert_eq!(routing.chosen_mask(2), expected);
    }

    fn seed_model() -> Model {
        let config = Config::seed();
        Model::load(
            &config,
            Arc::new(RandomInit::new(&config, 11).expect("valid")),
            ModelOptions::default(),
        )
        .expect("seed model loads")
    }

    #[test]
    fn incremental_decoding_matches_a_full_forward() {
        let mut model = seed_model();
        let tokens = [5u32, 80, 17, 200, 42, 9];
        let mut usage = ExpertUsage::new(model.config());
        let mut cache = model.new_kv_cache();
        let full = model
            .forward(&tokens, &mut cache, &mut usage, Logits::All)
            .expect("forward");
        let mut cache = model.new_kv_cache();
        let mut last = None;
        let prefill = model
            .forward(&tokens[..3], &mut cache, &mut usage, Logits::Last)
            .expect("prefill");
        assert_eq!(prefill.size(), [1, i64::from(model.config().vocab_size)]);
        for token in &tokens[3..] {
            last = Some(
                model
                    .forward(&[*token], &mut cache, &mut usage, Logits::Last)
                    .expect("step"),
            );
        }
        let last = last.expect("ran");
        let expected = full.narrow(0, 5, 1);
        let difference = (&last - &expected).abs().max().double_value(&[]);
        assert!(difference < 1e-4, "difference {difference}");
        assert_eq!(cache.positions(), 6);
        assert!(!usage.experts().is_empty());
    }

    #[test]
    fn a_batched_step_matches_each_request_alone() {
        let mut model = seed_model();
        let prompts: [&[u32]; 3] = [&[5, 80, 17], &[200], &[42, 9, 3, 77, 1, 150, 2]];
        let next = [11u32, 250, 64];
        let vocab = i64::from(model.config().vocab_size);
        let mut alone = Vec::new();
        let mut batched = Vec::new();
        for prompt in prompts {
            for states in [&mut alone, &mut batched] {
                let mut cache = model.new_kv_cache();
                let mut usage = ExpertUsage::new(model.config());
                let _ = model
                    .forward(prompt, &mut cache, &mut usage, Logits::Last)
                    .expect("prefill");
                states.push((cache, usage));
            }
        }
        for round in 0..3u32 {
            let expected: Vec<Tensor> = alone
                .iter_mut()
                .zip(next)
                .map(|((cache, usage), token)| {
                    model
                        .forward(&[token + round], cache, usage, Logits::Last)
                        .expect("alone")
                })
                .collect();
            let mut steps: Vec<DecodeStep<'_>> = batched
                .iter_mut()
                .zip(next)
                .map(|((cache, usage), token)| DecodeStep {
                    token: token + round,
                    cache,
                    usage,
                })
                .collect();
            let logits = model.forward_batch(&mut steps).expect("batched");
            assert_eq!(logits.size(), [3, vocab]);
            for (row, expected) in expected.iter().enumerate() {
                let got = logits.narrow(0, row as i64, 1);
                let scale = expected.abs().max().double_value(&[]);
                let difference = (&got - expected).abs().max().double_value(&[]);
                assert!(
                    difference <= 1e-4 * scale,
                    "round {round}, request {row}: difference {difference}, scale {scale}"
                );
            }
        }
        for ((cache, usage), (batched_cache, batched_usage)) in alone.iter().zip(&batched) {
            assert_eq!(cache.positions(), batched_cache.positions());
            assert_eq!(usage, batched_usage);
        }
    }

    #[test]
    fn a_failed_batch_changes_no_cache() {
        let mut model = seed_model();
        let vocab = model.config().vocab_size;
        let mut cache = model.new_kv_cache();
        let mut usage = ExpertUsage::new(model.config());
        let _ = model
            .forward(&[1, 2, 3], &mut cache, &mut usage, Logits::Last)
            .expect("prefill");
        let mut other = model.new_kv_cache();
        let mut other_usage = ExpertUsage::new(model.config());
        let _ = model
            .forward(&[4], &mut other, &mut other_usage, Logits::Last)
            .expect("prefill");
        let before = usage.clone();
        let mut steps = [
            DecodeStep {
                token: 7,
                cache: &mut cache,
                usage: &mut usage,
            },
            DecodeStep {
                token: vocab,
                cache: &mut other,
                usage: &mut other_usage,
            },
        ];
        assert!(matches!(
            model.forward_batch(&mut steps),
            Err(MoeError::TokenOutOfRange { .. })
        ));
        assert_eq!((cache.positions(), other.positions()), (3, 1));
        assert_eq!(usage, before);
    }

    #[test]
    fn refuses_out_of_vocabulary_tokens_and_overlong_context() {
        let mut model = seed_model();
        let mut usage = ExpertUsage::new(model.config());
        let mut cache = model.new_kv_cache();
        let vocab = model.config().vocab_size;
        assert!(matches!(
            model.forward(&[vocab], &mut cache, &mut usage, Logits::Last),
            Err(MoeError::TokenOutOfRange { .. })
        ));
        let context = model.config().max_position_embeddings as usize;
        let too_long = vec![1u32; context + 1];
        assert!(matches!(
            model.forward(&too_long, &mut cache, &mut usage, Logits::Last),
            Err(MoeError::ContextTooLong { .. })
        ));
    }

    #[test]
    fn sliding_window_hides_old_positions() {
        let mut model = seed_model();
        model.config.sliding_window = Some(2);
        let mask = model.attention_mask(0, 4).expect("mask").expect("masked");
        let values = Vec::<f32>::try_from(mask.flatten(0, -1)).expect("floats");
        let visible: Vec<bool> = values.iter().map(|value| *value == 0.0).collect();
        #[rustfmt::skip]
        let expected = [
            true, false, false, false,
            true, true, false, false,
            false, true, true, false,
            false, false, true, true,
        ];
        assert_eq!(visible, expected);
    }
}
