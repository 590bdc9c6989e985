//! The node's state: the open chain store and ledger, the model it serves (swapped when a new
//! one lands on the chain), and what it counted since it started.

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use blyan_api_types::LearningStatus;
use blyan_chain::{
    AuthorKey, BlockHash, BlockHeader, BlockKind, ChainStore, GenesisSpec, PolAcceptance,
    StoreConfig,
};
use blyan_ledger::{
    Address as LedgerAddress, AnyLedger, EmbeddedLedger, LedgerError, LedgerOptions, PgLedger,
    Tokenomics,
};
use blyan_moe::{ExpertName, ExpertUsage, Generator, MoeError};
use blyan_pol::{Certificate, Outcome, PolGate, PolRecord, RecordBlock};

use crate::config::{LedgerBackend, NodeConfig};
use crate::learner::{InferenceGate, initial_status};
use crate::pol::PolContext;
use crate::read_cache::ReadCache;
use crate::{Error, Result};

/// Directory of the chain store under `data_dir`.
pub use blyan_chain::CHAIN_DIR_NAME;

/// File of the embedded ledger under `data_dir`.
pub const LEDGER_FILE_NAME: &str = "ledger.sqlite";

/// The chain store's settings from the node's configuration.
pub fn store_config(config: &NodeConfig) -> StoreConfig {
    StoreConfig {
        durability: config.chain.durability,
        pow_difficulty_bits: config.chain.pow_difficulty_bits,
        proof_of_learning: config.pol.mode.certifies(),
        fork_rules: config.chain.fork_rules,
        free_bytes_min: config.chain.free_bytes_min,
        timestamp_skew_seconds_max: config.chain.timestamp_skew_seconds_max,
        ..StoreConfig::default()
    }
}

/// Opens (creating with genesis on first start) the chain store in `data_dir/chain`, with the
/// Proof-of-Learning gate of `config` unless its mode is `pow`.
pub fn open_chain(config: &NodeConfig) -> Result<ChainStore> {
    let context = PolContext::load(config)?;
    open_chain_with(config, context.as_ref())
}

/// [`open_chain`] for the store in `path` (a chain store directory), with the gate of `config`.
pub fn open_chain_at(config: &NodeConfig, path: &std::path::Path) -> Result<ChainStore> {
    let context = PolContext::load(config)?;
    open_store(config, path, context.as_ref())
}

/// [`open_chain`] with the Proof-of-Learning context already loaded.
fn open_chain_with(config: &NodeConfig, context: Option<&PolContext>) -> Result<ChainStore> {
    open_store(config, &config.data_dir.join(CHAIN_DIR_NAME), context)
}

fn open_store(
    config: &NodeConfig,
    path: &std::path::Path,
    context: Option<&PolContext>,
) -> Result<ChainStore> {
    let gate = context
        .map(|context| Arc::new(PolGate::new(context.params.clone())) as Arc<dyn PolAcceptance>);
    ChainStore::open_with(path, store_config(config), &GenesisSpec::shipped(), gate)
        .map_err(Error::ChainOpen)
}

/// The tokenomics `ledger.tokenomics` names (the shipped ones when it names none), checked
/// against `ledger.settle_margin_ms`: a paid chat must have time to generate before its hold
/// expires.
pub fn load_tokenomics(config: &NodeConfig) -> Result<Tokenomics> {
    let tokenomics = match &config.ledger.tokenomics {
        None => Tokenomics::shipped(),
        // Named explicitly, the file must exist (`Tokenomics::load` would fall back).
        Some(path) => std::fs::read_to_string(path)
            .map_err(|source| LedgerError::ConfigRead {
                path: path.clone(),
                source,
            })
            .and_then(|text| Tokenomics::from_yaml_str(&text)),
    }
    .map_err(Error::LedgerOpen)?;
    if config.ledger.settle_margin_ms >= tokenomics.hold_ttl_ms() {
        return Err(Error::ConfigInvalid {
            path: "node.yaml".into(),
            field: "ledger.settle_margin_ms".to_owned(),
            reason: format!(
                "{} ms leaves no time to generate within a hold of {} s (payments.hold_ttl_seconds)",
                config.ledger.settle_margin_ms, tokenomics.payments.hold_ttl_seconds
            ),
        });
    }
    Ok(tokenomics)
}

/// Opens the ledger the configuration names: the embedded file `data_dir/ledger.sqlite`, or
/// PostgreSQL at `ledger.postgres_url` (migrations applied), with the tokenomics of
/// [`load_tokenomics`].
pub async fn open_ledger(config: &NodeConfig) -> Result<AnyLedger> {
    let tokenomics = load_tokenomics(config)?;
    match config.ledger.backend {
        LedgerBackend::Embedded => {
            std::fs::create_dir_all(&config.data_dir).map_err(|source| Error::DataFile {
                path: config.data_dir.clone(),
                source,
            })?;
            let path = config.data_dir.join(LEDGER_FILE_NAME);
            EmbeddedLedger::open_with(path, tokenomics, LedgerOptions::default())
                .await
                .map(AnyLedger::Embedded)
                .map_err(Error::LedgerOpen)
        }
        LedgerBackend::Postgres => {
            // Validation refuses a postgres backend without a URL; a config built in code may
            // still lack one.
            let url =
                config
                    .ledger
                    .postgres_url
                    .as_deref()
                    .ok_or_else(|| Error::ConfigInvalid {
                        path: "node.yaml".into(),
                        field: "ledger.postgres_url".to_owned(),
                        reason: "is required when ledger.backend is postgres".to_owned(),
                    })?;
            PgLedger::connect_with(url, tokenomics, LedgerOptions::default())
                .await
                .map(AnyLedger::Pg)
                .map_err(Error::LedgerOpen)
        }
    }
}

/// Runs `work` on a blocking thread (store access, model loading), naming it in a failure.
pub(crate) async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| Error::Task {
            what,
            reason: error.to_string(),
        })
}

/// The label of a model's state, shown by `/health`, `/model` and `/experts`.
pub fn model_label(untrained: bool) -> &'static str {
    if untrained {
        "untrained seed"
    } else {
        "trained"
    }
}

/// A running node's state: what every service shares.
///
/// Built by [`Node::open`] (chain store and ledger from the configuration) or [`Node::new`]
/// plus the `with_*` methods for the parts a node may run without (tests, tools): the chain,
/// the ledger, the model. Share it as `Arc<Node>`.
pub struct Node {
    config: NodeConfig,
    started: Instant,
    chain: Option<Arc<ChainStore>>,
    ledger: Option<Arc<AnyLedger>>,
    server_account: Option<LedgerAddress>,
    /// The model served; replaced when a new model's meta block arrives.
    generator: RwLock<Option<Generator>>,
    /// Serializes reloads, so the last one started (the newest model) is the one left serving.
    reloading: tokio::sync::Mutex<()>,
    /// Token positions per `[layer][expert]` since start, for the expert dashboard.
    expert_uses: Mutex<Vec<Vec<u64>>>,
    /// Inference requests in flight, which the learner waits for.
    inference: Arc<InferenceGate>,
    /// What the learner is doing, for `GET /learning` and `/metrics`.
    learning: Mutex<LearningStatus>,
    /// Proof-of-Learning's rules, pool and the node's key (`None` in `pow` mode).
    pol: Option<Arc<PolContext>>,
    /// The dataset gates' settings, key and L1 teacher (`None` on a node built without
    /// [`Node::open`] or [`Node::with_datasets`]).
    datasets: Option<Arc<crate::datasets::DatasetContext>>,
    /// The network, once [`crate::NetworkService`] has started it.
    network: std::sync::OnceLock<blyan_p2p::NetworkHandle>,
    /// The network's expert client, when `p2p.remote_experts` has peers compute the experts
    /// this node does not serve; every model the node loads gets it.
    remote_experts: std::sync::OnceLock<Arc<blyan_p2p::ExpertClient>>,
    /// The read routes' costly answers, until the next append.
    read_cache: ReadCache,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("config", &self.config)
            .field("chain", &self.chain.is_some())
            .field("ledger", &self.ledger.is_some())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A node started now with nothing open: no chain store, ledger or model.
    pub fn new(config: NodeConfig) -> Self {
        let learning = Mutex::new(initial_status(&config.learning));
        Self {
            config,
            inference: Arc::new(InferenceGate::default()),
            learning,
            started: Instant::now(),
            chain: None,
            ledger: None,
            server_account: None,
            generator: RwLock::new(None),
            reloading: tokio::sync::Mutex::new(()),
            expert_uses: Mutex::new(Vec::new()),
            pol: None,
            datasets: None,
            network: std::sync::OnceLock::new(),
            remote_experts: std::sync::OnceLock::new(),
            read_cache: ReadCache::default(),
        }
    }

    /// The network's expert client (`GET /p2p/experts`), when the node runs a network.
    pub fn expert_client(&self) -> Option<&Arc<blyan_p2p::ExpertClient>> {
        self.remote_experts.get()
    }

    /// Records the network's expert client; with `p2p.remote_experts` the served model (and
    /// every model loaded later) computes the experts this node does not serve on peers.
    pub(crate) async fn set_expert_client(&self, client: Arc<blyan_p2p::ExpertClient>) {
        if self.remote_experts.set(client).is_err() || !self.config.p2p.remote_experts {
            return;
        }
        if let Some(generator) = self.generator() {
            let hook = self.remote_hook();
            match blocking("installing remote experts", move || {
                generator.set_remote_experts(hook)
            })
            .await
            {
                Ok(Ok(())) => tracing::info!("experts this node does not serve run on peers"),
                Ok(Err(error)) => tracing::error!(%error, "cannot install remote experts"),
                Err(error) => tracing::error!(%error, "installing remote experts failed"),
            }
        }
    }

    /// The remote-experts hook a model gets: the network's client with `p2p.remote_experts`.
    fn remote_hook(&self) -> Option<Arc<dyn blyan_moe::RemoteExperts>> {
        if !self.config.p2p.remote_experts {
            return None;
        }
        self.remote_experts
            .get()
            .map(|client| Arc::clone(client) as Arc<dyn blyan_moe::RemoteExperts>)
    }

    /// The read routes' cached answers.
    pub(crate) fn read_cache(&self) -> &ReadCache {
        &self.read_cache
    }

    /// The network, when the node runs one ([`crate::NetworkService`]).
    pub fn network(&self) -> Option<&blyan_p2p::NetworkHandle> {
        self.network.get()
    }

    /// Records the running network's handle (once; a second call is ignored).
    pub(crate) fn set_network(&self, handle: blyan_p2p::NetworkHandle) {
        let _ = self.network.set(handle);
    }

    /// A node with its chain store ([`open_chain`]) and ledger ([`open_ledger`]) open, but no
    /// model yet: see [`Self::ensure_seed_model`] and [`Self::load_model`].
    pub async fn open(config: NodeConfig) -> Result<Self> {
        let chain_config = config.clone();
        let (chain, context) = blocking("opening the chain store", move || {
            let context = PolContext::load(&chain_config)?.map(Arc::new);
            let chain = open_chain_with(&chain_config, context.as_deref())?;
            Ok::<_, Error>((chain, context))
        })
        .await??;
        let ledger = open_ledger(&config).await?;
        let mut node = Self::new(config)
            .with_chain(Arc::new(chain))
            .with_ledger(Arc::new(ledger));
        let validators = context
            .as_ref()
            .map(|context| context.params.validators.clone())
            .unwrap_or_default();
        node.datasets = Some(Arc::new(crate::datasets::DatasetContext::load(
            &node.config,
            validators,
        )?));
        node.pol = context;
        Ok(node)
    }

    /// The dataset service's context (`docs/datasets.md`).
    pub fn dataset_context(&self) -> Option<&Arc<crate::datasets::DatasetContext>> {
        self.datasets.as_ref()
    }

    /// With the dataset service of `context`.
    pub fn with_datasets(mut self, context: crate::datasets::DatasetContext) -> Self {
        self.datasets = Some(Arc::new(context));
        self
    }

    /// Proof-of-Learning's rules, pool and the node's key; `None` in `pow` mode or on a node
    /// built without [`Node::open`].
    pub fn pol(&self) -> Option<&Arc<PolContext>> {
        self.pol.as_ref()
    }

    /// On a chain that holds no model yet, writes the model `model.seed` names: the shipped
    /// trained model, or the untrained random one signed by `key` (`blyan_moe::ensure_model`);
    /// on one that holds a model, writes nothing.
    pub async fn ensure_seed_model(&self, key: &AuthorKey) -> Result<()> {
        let chain = self.chain.clone().ok_or(Error::ChainUnavailable)?;
        let key = key.clone();
        let seed = self.config.model.seed_model();
        // `ensure_model` itself logs what it wrote (a warning for the untrained seed).
        blocking("writing the first model", move || {
            blyan_moe::ensure_model(&chain, &key, &seed)
        })
        .await?
        .map_err(Error::ModelLoad)?;
        Ok(())
    }

    /// Serves the newest model on the chain (`blyan_moe::Generator::from_chain`) on
    /// `model.device` in `model.dtype`, with the expert cache budget of
    /// `cache.expert_bytes_max`; a CUDA device the machine lacks is
    /// [`Error::ModelLoad`] with `blyan_moe::MoeError::CudaUnavailable`. A chain that holds no model leaves the
    /// node without one (chat is refused with `ModelUnavailable`), with a warning in the log.
    pub async fn load_model(self) -> Result<Self> {
        match self.newest_model().await? {
            Some(generator) => Ok(self.with_generator(generator)),
            None => {
                tracing::warn!("the chain holds no model: chat is unavailable");
                Ok(self)
            }
        }
    }

    /// Loads the newest model on the chain, logging whether it is the untrained seed.
    async fn newest_model(&self) -> Result<Option<Generator>> {
        let chain = self.chain.clone().ok_or(Error::ChainUnavailable)?;
        let options = self
            .config
            .model
            .options(self.config.cache.expert_bytes_max);
        let hook = self.remote_hook();
        let loaded = blocking("loading the model", move || {
            let generator = Generator::from_chain(chain, options)?;
            if hook.is_some() {
                generator.set_remote_experts(hook)?;
            }
            Ok::<_, MoeError>(generator)
        })
        .await?;
        match loaded {
            Ok(generator) => {
                let info = generator.info();
                if info.untrained {
                    tracing::warn!(model = %info.description, "serving an UNTRAINED seed model");
                } else {
                    tracing::info!(model = %info.description, "serving the model from the chain");
                }
                Ok(Some(generator))
            }
            Err(MoeError::NoModelOnChain) => Ok(None),
            Err(error) => Err(Error::ModelLoad(error)),
        }
    }

    /// Switches to the newest model on the chain (after a meta block arrived). Requests already
    /// generating finish on the model they started with. If the new model cannot be loaded, the
    /// node keeps serving the old one and logs why.
    pub async fn reload_model(&self) {
        let _one_at_a_time = self.reloading.lock().await;
        match self.newest_model().await {
            Ok(Some(generator)) => {
                *self
                    .generator
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Some(generator);
            }
            Ok(None) => {}
            Err(error) => {
                tracing::error!(%error, "the chain's newest model does not load: serving the previous one");
            }
        }
    }

    /// Drops `expert` from the served model's cache (after a new version of it arrived), so its
    /// next use loads the current version from the chain.
    pub async fn forget_expert(&self, expert: ExpertName) {
        let Some(generator) = self.generator() else {
            return;
        };
        // Evicting waits for the model between two forward passes.
        match blocking("evicting an expert", move || {
            generator.forget_expert(expert)
        })
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::error!(%error, %expert, "could not evict the expert"),
            Err(error) => tracing::error!(%error, %expert, "evicting the expert failed"),
        }
    }

    /// Appends a signed block sent in its wire form (`blyan_chain::encode_block`) and reacts to
    /// it: a meta block makes the node serve the chain's newest model, an expert block drops
    /// that expert from the cache. A block the store refuses is [`Error::BlockRefused`]; a store
    /// failure is [`Error::ChainFailed`]. A block too large to hold in memory is streamed
    /// instead: [`Node::begin_upload`].
    ///
    /// A dataset sample (`DatasetEntry` on chain D) meets the L0 screen first, as one submitted
    /// through `POST /datasets` does: a refused sample is [`Error::DatasetRefused`] with its
    /// typed refusal, and nothing is appended.
    ///
    /// `wire` is taken by value (a request body, for instance) so it can move to the blocking
    /// thread that validates and appends it without a copy.
    pub async fn submit_block<B>(&self, wire: B) -> Result<(BlockHash, BlockHeader)>
    where
        B: AsRef<[u8]> + Send + 'static,
    {
        let screened = match blyan_chain::decode_block(wire.as_ref()) {
            Ok(decoded) => {
                self.screen_submitted(&decoded.header, decoded.payload)
                    .await?
            }
            // The store says what is wrong with it.
            Err(_) => None,
        };
        let appended = self.submit_block_screened(wire).await;
        drop(screened);
        appended
    }

    /// [`Node::submit_block`] without the L0 screen: for the node's own dataset records, which
    /// were checked before they were written.
    pub(crate) async fn submit_block_screened<B>(&self, wire: B) -> Result<(BlockHash, BlockHeader)>
    where
        B: AsRef<[u8]> + Send + 'static,
    {
        let claim = self.claim_in(wire.as_ref());
        self.append_then_react(claim, move |chain| chain.submit(wire.as_ref()))
            .await
    }

    /// Runs `append` on a blocking thread, then reacts to the appended block
    /// ([`Node::block_appended`]). A Proof-of-Learning `claim` (not yet stored) has its bond
    /// locked first, and given back when the append fails. Shared by [`Node::submit_block`] and
    /// [`Node::finish_upload`], so a block reaches the chain the same way whichever form it came
    /// in.
    pub(crate) async fn append_then_react(
        &self,
        claim: Option<(BlockHash, LedgerAddress)>,
        append: impl FnOnce(&ChainStore) -> blyan_chain::Result<BlockHash> + Send + 'static,
    ) -> Result<(BlockHash, BlockHeader)> {
        let chain = self.chain.clone().ok_or(Error::ChainUnavailable)?;
        // A claim's bond is locked before it is appended; a claim already stored (a resend)
        // has its bond, and the store refuses it again.
        let claim = claim.filter(|(claim, _)| !chain.contains(claim).unwrap_or(false));
        if let (Some((claim, author)), Some(ledger)) = (claim, self.ledger.as_ref()) {
            crate::pol::lock_bond(ledger, claim, author).await?;
        }
        let stored_chain = Arc::clone(&chain);
        let appended = blocking("appending a block", move || {
            let hash = append(&chain).map_err(|error| {
                if error.is_invalid_block() {
                    Error::BlockRefused(error)
                } else {
                    Error::ChainFailed(error)
                }
            })?;
            let header = chain
                .header(&hash)
                .map_err(Error::ChainFailed)?
                .ok_or_else(|| Error::Task {
                    what: "appending a block",
                    reason: format!("block {hash} was appended but has no header"),
                })?;
            let candidate = chain.is_candidate(&hash).map_err(Error::ChainFailed)?;
            Ok::<_, Error>((hash, header, candidate))
        })
        .await
        .and_then(|appended| appended);
        let (hash, header, candidate) = match appended {
            Ok(appended) => appended,
            Err(error) => {
                // Give the bond back unless the claim is stored after all (the same claim sent
                // twice at once: the other send appended it).
                if let (Some((claim, _)), Some(ledger)) = (claim, self.ledger.as_ref())
                    && !stored_chain.contains(&claim).unwrap_or(true)
                {
                    crate::pol::undo_bond(ledger, claim).await;
                }
                return Err(error);
            }
        };
        tracing::info!(block = %hash, kind = ?header.kind, candidate, "block appended");
        self.block_appended(hash, &header, candidate).await;
        Ok((hash, header))
    }

    /// Reacts to a block appended to the chain, whichever way it came (`POST /blocks`, a
    /// peer): a meta block makes the node serve the chain's newest model, an expert block drops
    /// that expert from the cache, an accepting certificate reloads the model. A candidate
    /// changes nothing served.
    pub async fn block_appended(&self, hash: BlockHash, header: &BlockHeader, candidate: bool) {
        match header.kind {
            _ if candidate => {}
            BlockKind::Meta => self.reload_model().await,
            BlockKind::Expert => {
                if let Some(expert) = header.meta.expert {
                    self.forget_expert(expert).await;
                }
            }
            BlockKind::PolProof if self.promotes(hash).await => self.reload_model().await,
            _ => {}
        }
    }

    /// The claim (its hash and author) a wire block holds, when Proof-of-Learning is on and it
    /// is one; the bond is locked before it is appended.
    fn claim_in(&self, wire: &[u8]) -> Option<(BlockHash, LedgerAddress)> {
        self.pol.as_ref()?;
        let decoded = blyan_chain::decode_block(wire).ok()?;
        self.claim_of(decoded.hash, &decoded.header, decoded.payload)
    }

    /// Whether stored block `hash` is an accepting certificate (its append promoted a
    /// candidate, so the served model changed).
    async fn promotes(&self, hash: BlockHash) -> bool {
        let Some(chain) = self.chain.clone() else {
            return false;
        };
        blocking("reading a certificate", move || {
            matches!(
                RecordBlock::read(&chain, hash),
                Ok(Some(RecordBlock {
                    record: PolRecord::Certificate(Certificate {
                        outcome: Outcome::Accepted,
                        ..
                    }),
                    ..
                }))
            )
        })
        .await
        .unwrap_or(false)
    }

    /// Serves `generator` (without one, chat is refused with `ModelUnavailable`).
    #[must_use]
    pub fn with_generator(self, generator: Generator) -> Self {
        *self
            .generator
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(generator);
        self
    }

    /// Charges signed-in callers through `ledger` (without one, only the free tier chats).
    #[must_use]
    pub fn with_ledger(mut self, ledger: Arc<AnyLedger>) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// The chain store, for the explorer, block submission and the model.
    #[must_use]
    pub fn with_chain(mut self, chain: Arc<ChainStore>) -> Self {
        self.chain = Some(chain);
        self
    }

    /// The account paid the serving share of each captured fee (the ledger's reward pool when
    /// not set).
    #[must_use]
    pub fn with_server_account(mut self, account: LedgerAddress) -> Self {
        self.server_account = Some(account);
        self
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Time since the node started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The generator serving chat now, if any (a handle: the model may be replaced after).
    pub fn generator(&self) -> Option<Generator> {
        self.generator
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Most tokens of one chat on `generator`'s model, prompt plus completion:
    /// `api.context_tokens_max`, lowered to the model's `max_position_embeddings`.
    pub fn context_tokens_max(&self, generator: &Generator) -> u32 {
        self.config
            .api
            .context_tokens_max
            .min(generator.info().config.max_position_embeddings)
    }

    /// The ledger, if any.
    pub fn ledger(&self) -> Option<&Arc<AnyLedger>> {
        self.ledger.as_ref()
    }

    /// The chain store, if any.
    pub fn chain(&self) -> Option<&Arc<ChainStore>> {
        self.chain.as_ref()
    }

    /// The account paid the serving share of captured fees, if set.
    pub fn server_account(&self) -> Option<LedgerAddress> {
        self.server_account
    }

    /// Adds one request's expert usage to the totals.
    pub fn record_expert_usage(&self, usage: &ExpertUsage) {
        let mut totals = self
            .expert_uses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (layer, counts) in usage.tokens.iter().enumerate() {
            if totals.len() <= layer {
                totals.resize(layer + 1, Vec::new());
            }
            let row = &mut totals[layer];
            if row.len() < counts.len() {
                row.resize(counts.len(), 0);
            }
            for (slot, count) in row.iter_mut().zip(counts) {
                *slot = slot.saturating_add(u64::from(*count));
            }
        }
    }

    /// Token positions per `[layer][expert]` since start.
    pub fn expert_uses(&self) -> Vec<Vec<u64>> {
        self.expert_uses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The gate counting inference requests in flight (a chat holds it while it generates).
    pub fn inference_gate(&self) -> &Arc<InferenceGate> {
        &self.inference
    }

    /// What the background learner is doing now (`enabled: false` when learning is off).
    pub fn learning_status(&self) -> LearningStatus {
        self.learning
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Changes the learner's status (the learner's thread reports through it).
    pub(crate) fn update_learning_status(&self, change: impl FnOnce(&mut LearningStatus)) {
        change(&mut self.learning.lock().unwrap_or_else(PoisonError::into_inner));
    }
}
