//! Experts computed elsewhere: the hook a [`crate::Model`] consults for the experts it does
//! not compute itself (a node serving only some experts asks the peers that serve the others).
//!
//! The model stays unaware of the network: it hands each layer's remote experts their inputs in
//! one [`RemoteExperts::call_layer`] and mixes the outputs exactly as it mixes local ones, in
//! ascending expert order, so a remote run is bit-identical to a local one when the remote side
//! computes `ExpertWeights::forward` on the same weights.

use tch::Tensor;

use crate::error::Result;
use crate::expert::ExpertName;

/// One expert's share of a layer: the hidden states routed to it.
#[derive(Debug)]
pub struct ExpertCall {
    /// The expert.
    pub expert: ExpertName,
    /// The rows routed to it, float32 `[rows, hidden]`, contiguous, on the model's device.
    pub hidden: Tensor,
}

/// Computes experts the model does not hold. Implemented by the network's expert client
/// (`blyan-p2p`); a model without one computes every expert itself.
pub trait RemoteExperts: Send + Sync + std::fmt::Debug {
    /// Whether `expert` is computed by this hook rather than loaded into the expert cache.
    fn is_remote(&self, expert: ExpertName) -> bool;

    /// Every remote expert of layer `layer` applied to its rows: one call per layer (the
    /// implementation may fan out to several holders at once). Returns one float32 tensor
    /// `[rows, hidden]` per call, in the order of `calls`; a call that cannot be answered is
    /// an error ([`crate::MoeError::RemoteExpert`]), never a silent zero.
    fn call_layer(&self, layer: u32, calls: Vec<ExpertCall>) -> Result<Vec<Tensor>>;
}
