//! The expert cache: experts are loaded on demand from a [`WeightSource`] and kept, least
//! recently used first out, within a byte budget, `expert_bytes_max`: the node config's
//! `cache.expert_bytes_max`, under the same name through [`crate::ModelOptions`] to here.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tch::{Device, Kind};

use crate::error::{MoeError, Result};
use crate::expert::{ExpertName, ExpertWeights};
use crate::weights::{WeightSource, shape_of};

/// Counters of an [`ExpertCache`], readable from any thread while the model runs.
#[derive(Debug, Default)]
pub struct ExpertCacheMetrics {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    bytes_resident: AtomicU64,
    experts_resident: AtomicU64,
    expert_bytes_max: AtomicU64,
    load_nanos_total: AtomicU64,
    load_nanos_max: AtomicU64,
}

/// A copy of the cache counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ExpertCacheStats {
    /// Requests served from memory.
    pub hits: u64,
    /// Requests that loaded the expert from the source.
    pub misses: u64,
    /// Experts dropped to stay within the budget.
    pub evictions: u64,
    /// Bytes of expert tensors held now.
    pub bytes_resident: u64,
    /// Experts held now.
    pub experts_resident: u64,
    /// The byte budget (`cache.expert_bytes_max` in the node's config).
    pub expert_bytes_max: u64,
    /// Seconds spent loading experts (reading, viewing, dequantizing, converting), in total.
    pub load_seconds_total: f64,
    /// The slowest single load, in seconds.
    pub load_seconds_max: f64,
}

impl ExpertCacheStats {
    /// Hits over requests; 0 before the first request.
    pub fn hit_rate(&self) -> f64 {
        let requests = self.hits + self.misses;
        if requests == 0 {
            0.0
        } else {
            self.hits as f64 / requests as f64
        }
    }
}

impl ExpertCacheMetrics {
    /// The counters now.
    pub fn snapshot(&self) -> ExpertCacheStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ExpertCacheStats {
            hits: load(&self.hits),
            misses: load(&self.misses),
            evictions: load(&self.evictions),
            bytes_resident: load(&self.bytes_resident),
            experts_resident: load(&self.experts_resident),
            expert_bytes_max: load(&self.expert_bytes_max),
            load_seconds_total: load(&self.load_nanos_total) as f64 * 1e-9,
            load_seconds_max: load(&self.load_nanos_max) as f64 * 1e-9,
        }
    }
}

#[derive(Debug)]
struct Entry {
    weights: ExpertWeights,
    bytes: u64,
    last_used: u64,
}

/// Experts by id, loaded from a [`WeightSource`] on first use and kept within `expert_bytes_max`,
/// evicting the least recently used.
///
/// Every expert handed out is checked against the configuration's shapes and converted to the
/// compute kind and device: a tensor already in both (a CPU view of a block stored in the
/// compute dtype) is kept as it is, sharing the block's bytes; the budget counts it at its size
/// in the compute dtype all the same. An expert larger than the whole budget is loaded, used and not kept.
/// Handles given out share storage with the cached tensors, so an eviction never invalidates a
/// computation in progress; the budget counts what the cache itself holds.
pub struct ExpertCache {
    source: Arc<dyn WeightSource>,
    hidden_size: u64,
    intermediate_size: u64,
    kind: Kind,
    device: Device,
    entries: HashMap<ExpertName, Entry>,
    // Invariant: `order` maps each entry's `last_used` tick to its id, one to one with `entries`.
    order: BTreeMap<u64, ExpertName>,
    tick: u64,
    bytes_resident: u64,
    expert_bytes_max: u64,
    metrics: Arc<ExpertCacheMetrics>,
}

impl std::fmt::Debug for ExpertCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExpertCache")
            .field("source", &self.source.describe())
            .field("experts_resident", &self.entries.len())
            .field("bytes_resident", &self.bytes_resident)
            .field("expert_bytes_max", &self.expert_bytes_max)
            .finish()
    }
}

impl ExpertCache {
    /// A cache over `source` for experts of `[intermediate_size, hidden_size]` matrices,
    /// converted to `kind` on `device`, holding at most `expert_bytes_max`.
    pub fn new(
        source: Arc<dyn WeightSource>,
        hidden_size: u32,
        intermediate_size: u32,
        kind: Kind,
        device: Device,
        expert_bytes_max: u64,
    ) -> Self {
        let metrics = Arc::new(ExpertCacheMetrics::default());
        metrics
            .expert_bytes_max
            .store(expert_bytes_max, Ordering::Relaxed);
        Self {
            source,
            hidden_size: u64::from(hidden_size),
            intermediate_size: u64::from(intermediate_size),
            kind,
            device,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            bytes_resident: 0,
            expert_bytes_max,
            metrics,
        }
    }

    /// The expert's weights, from memory or loaded from the source.
    ///
    /// An expert the source lacks is [`MoeError::MissingExpert`] naming it.
    pub fn get(&mut self, id: ExpertName) -> Result<ExpertWeights> {
        self.tick += 1;
        if let Some(entry) = self.entries.get_mut(&id) {
            self.order.remove(&entry.last_used);
            entry.last_used = self.tick;
            self.order.insert(self.tick, id);
            self.metrics.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(entry.weights.shallow_clone());
        }
        self.metrics.misses.fetch_add(1, Ordering::Relaxed);
        // A source that reads blocks (the chain) adds the block's hash in a span of its own.
        let _span = tracing::info_span!("expert_load", expert = %id).entered();
        let started = Instant::now();
        let weights = self.load(id)?;
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.metrics
            .load_nanos_total
            .fetch_add(nanos, Ordering::Relaxed);
        self.metrics
            .load_nanos_max
            .fetch_max(nanos, Ordering::Relaxed);
        tracing::debug!(expert = %id, load_ms = nanos as f64 * 1e-6, "expert loaded");

        let bytes = weights.bytes();
        if bytes > self.expert_bytes_max {
            return Ok(weights);
        }
        while self.bytes_resident + bytes > self.expert_bytes_max {
            self.evict_oldest();
        }
        let handed_out = weights.shallow_clone();
        self.entries.insert(
            id,
            Entry {
                weights,
                bytes,
                last_used: self.tick,
            },
        );
        self.order.insert(self.tick, id);
        self.bytes_resident += bytes;
        self.publish_residency();
        Ok(handed_out)
    }

    fn load(&self, id: ExpertName) -> Result<ExpertWeights> {
        let raw = self.source.expert(id)?;
        let (inner, hidden) = (self.intermediate_size, self.hidden_size);
        let check =
            |matrix: &str, tensor: tch::Tensor, expected: [u64; 2]| -> Result<tch::Tensor> {
                let got = shape_of(&tensor);
                if got != expected {
                    return Err(MoeError::WrongShape {
                        name: format!("{id}.{matrix}"),
                        got,
                        expected: expected.to_vec(),
                    });
                }
                Ok(tensor.f_to_kind(self.kind)?.f_to_device(self.device)?)
            };
        Ok(ExpertWeights {
            w1: check("w1", raw.w1, [inner, hidden])?,
            w2: check("w2", raw.w2, [hidden, inner])?,
            w3: check("w3", raw.w3, [inner, hidden])?,
        })
    }

    fn evict_oldest(&mut self) {
        let Some((_, id)) = self.order.pop_first() else {
            return;
        };
        if let Some(entry) = self.entries.remove(&id) {
            self.bytes_resident -= entry.bytes;
            self.metrics.evictions.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(expert = %id, "expert evicted");
        }
        debug_assert_eq!(self.order.len(), self.entries.len());
    }

    fn publish_residency(&self) {
        debug_assert_eq!(self.order.len(), self.entries.len());
        debug_assert!(self.bytes_resident <= self.expert_bytes_max);
        self.metrics
            .bytes_resident
            .store(self.bytes_resident, Ordering::Relaxed);
        self.metrics
            .experts_resident
            .store(self.entries.len() as u64, Ordering::Relaxed);
    }

    /// Changes the budget, evicting at once what no longer fits.
    pub fn set_expert_bytes_max(&mut self, expert_bytes_max: u64) {
        self.expert_bytes_max = expert_bytes_max;
        self.metrics
            .expert_bytes_max
            .store(expert_bytes_max, Ordering::Relaxed);
        while self.bytes_resident > self.expert_bytes_max {
            self.evict_oldest();
        }
        self.publish_residency();
    }

    /// Drops every cached expert (counted as evictions), e.g. after new expert versions landed.
    pub fn clear(&mut self) {
        while !self.entries.is_empty() {
            self.evict_oldest();
        }
        self.publish_residency();
    }

    /// Drops one expert if it is held (counted as an eviction), so its next use loads its
    /// current version from the source. Returns whether it was held.
    pub fn forget(&mut self, id: ExpertName) -> bool {
        let Some(entry) = self.entries.remove(&id) else {
            return false;
        };
        self.order.remove(&entry.last_used);
        self.bytes_resident -= entry.bytes;
        self.metrics.evictions.fetch_add(1, Ordering::Relaxed);
        self.publish_residency();
        true
    }

    /// Experts held now, least recently used first.
    pub fn resident(&self) -> Vec<ExpertName> {
        self.order.values().copied().collect()
    }

    /// The counters now.
    pub fn stats(&self) -> ExpertCacheStats {
        self.metrics.snapshot()
    }

    /// A shared handle on the counters, to read them while the model is busy.
    pub fn metrics(&self) -> Arc<ExpertCacheMetrics> {
        Arc::clone(&self.metrics)
    }

    /// The weight source experts are loaded from.
    pub fn source(&self) -> &Arc<dyn WeightSource> {
        &self.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::expert::expert_name;
    use crate::weights::RandomInit;

    fn cache(budget_experts: u64) -> (ExpertCache, u64) {
        let config = Config::seed();
        let expert_bytes =
            3 * u64::from(config.hidden_size) * u64::from(config.intermediate_size) * 4;
        let cache = ExpertCache::new(
            Arc::new(RandomInit::new(&config, 3).expect("valid")),
            config.hidden_size,
            config.intermediate_size,
            Kind::Float,
            Device::Cpu,
            budget_experts * expert_bytes,
        );
        (cache, expert_bytes)
    }

    #[test]
    fn evicts_least_recently_used_within_budget() {
        let (mut cache, expert_bytes) = cache(2);
        let [a, b, c] = [0, 1, 2].map(|expert| expert_name(0, expert));
        cache.get(a).expect("a");
        cache.get(b).expect("b");
        cache.get(a).expect("a again");
        cache.get(c).expect("c evicts b");
        assert_eq!(cache.resident(), vec![a, c]);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.evictions), (1, 3, 1));
        assert_eq!(stats.bytes_resident, 2 * expert_bytes);
        assert_eq!(stats.experts_resident, 2);
    }

    #[test]
    fn budget_at_one_expert_keeps_it_and_one_byte_less_keeps_none() {
        let (mut cache, expert_bytes) = cache(1);
        cache.get(expert_name(1, 1)).expect("loads");
        assert_eq!(cache.stats().bytes_resident, expert_bytes);
        cache.set_expert_bytes_max(expert_bytes - 1);
        assert_eq!(cache.stats().bytes_resident, 0);
        cache.get(expert_name(1, 1)).expect("still served");
        let stats = cache.stats();
        assert_eq!(
            (stats.bytes_resident, stats.misses, stats.evictions),
            (0, 2, 1)
        );
    }

    #[test]
    fn forgetting_an_expert_reloads_it_on_next_use() {
        let (mut cache, expert_bytes) = cache(2);
        let [a, b] = [0, 1].map(|expert| expert_name(0, expert));
        cache.get(a).expect("a");
        cache.get(b).expect("b");
        assert!(cache.forget(a));
        assert!(!cache.forget(a), "a is no longer held");
        assert_eq!(cache.resident(), vec![b]);
        assert_eq!(cache.stats().bytes_resident, expert_bytes);
        cache.get(a).expect("a again");
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.evictions), (0, 3, 1));
        assert_eq!(cache.resident(), vec![b, a]);
    }

    #[test]
    fn missing_expert_is_named() {
        let (mut cache, _) = cache(4);
        let missing = expert_name(9, 0);
        match cache.get(missing) {
            Err(MoeError::MissingExpert { expert }) => assert_eq!(expert, missing),
            other => panic!("expected MissingExpert, got {other:?}"),
        }
    }
}
