//! The chain explorer and `POST /blocks` over real HTTP against the node's RocksDB store.

use blyan_chain::{AuthorKey, BlockHeader, BlockKind, ChainId, encode_block};

use crate::support::{Node, check_refused, into_json};

/// A signed dataset entry extending the node's chain D.
pub(crate) fn dataset_block(node: &Node, key: &AuthorKey, payload: &[u8]) -> BlockHeader {
    let chain = node.state.chain().expect("the node has a chain store");
    let tip = chain.tip(ChainId::Dataset);
    let parent = chain.header(&tip.hash).unwrap().unwrap();
    let mut header = BlockHeader::new_child(
        &tip,
        BlockKind::DatasetEntry,
        payload,
        parent.timestamp_ms + 1,
    );
    header.author = key.address();
    header.sign(key);
    header
}

async fn submit(node: &Node, body: Vec<u8>) -> (u16, serde_json::Value) {
    let response = node
        .http
        .post(node.url("/blocks"))
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    into_json(response).await
}

#[tokio::test]
async fn a_submitted_block_is_explored_and_its_payload_served() {
    let node = Node::start().await;
    let (status, page) = node.get("/chain/A/blocks", None).await;
    assert_eq!(status, 200, "{page}");
    let genesis = &page["blocks"][0];
    assert_eq!(genesis["height"], 0);
    assert_eq!(genesis["kind"], "genesis");
    assert!(page["next"].is_null(), "genesis is the tip: {page}");

    let key = AuthorKey::generate();
    // Larger than `api.body_bytes_max` (64 KiB): `POST /blocks` has its own bound.
    let payload: Vec<u8> = (0..200_000_u32).map(|i| (i % 251) as u8).collect();
    let header = dataset_block(&node, &key, &payload);
    let (status, created) = submit(&node, encode_block(&header, &payload)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["hash"], header.hash().to_string());

    let (status, page) = node.get("/chain/D/blocks?from=1&limit=10", None).await;
    assert_eq!(status, 200, "{page}");
    let blocks = page["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 1, "{page}");
    assert_eq!(blocks[0]["hash"], header.hash().to_string());
    assert_eq!(blocks[0]["kind"], "dataset_entry");
    assert_eq!(blocks[0]["payload_bytes"], payload.len());

    let (status, shown) = node.get(&format!("/blocks/{}", header.hash()), None).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["author"], key.address().to_string());
    assert_eq!(shown["height"], 1);
    // The genesis it extends lists it as a dependent.
    let parent = header.prev_hash.unwrap();
    let (_, parent_shown) = node.get(&format!("/blocks/{parent}"), None).await;
    assert!(
        parent_shown["dependents"]
            .to_string()
            .contains(&header.hash().to_string()),
        "{parent_shown}"
    );

    let response = node
        .http
        .get(node.url(&format!("/blocks/{}/payload", header.hash())))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    assert_eq!(response.bytes().await.unwrap().as_ref(), payload.as_slice());

    // The same block again conflicts with the stored one.
    check_refused(
        &submit(&node, encode_block(&header, &payload)).await,
        409,
        "block_exists",
    );
    // A graceful stop drains the server.
    node.stop().await;
}

#[tokio::test]
async fn invalid_blocks_are_refused_with_the_rule_they_break() {
    let node = Node::start().await;
    let key = AuthorKey::generate();
    let payload = b"entry".to_vec();
    let header = dataset_block(&node, &key, &payload);

    // Payload bytes that are not the ones the header commits to.
    check_refused(
        &submit(&node, encode_block(&header, b"other")).await,
        422,
        "block_payload_hash_mismatch",
    );
    // A parent the store does not hold.
    let mut orphan = header.clone();
    orphan.prev_hash = Some(blyan_chain::BlockHash([7; 32]));
    orphan.sign(&key);
    check_refused(
        &submit(&node, encode_block(&orphan, &payload)).await,
        422,
        "block_unknown_parent",
    );
    // Signed by someone other than its author.
    let mut forged = header.clone();
    forged.sign(&AuthorKey::generate());
    forged.author = key.address();
    check_refused(
        &submit(&node, encode_block(&forged, &payload)).await,
        422,
        "block_wrong_signer",
    );
    // A kind chain D does not hold.
    let mut wrong_kind = header.clone();
    wrong_kind.kind = BlockKind::Expert;
    wrong_kind.sign(&key);
    check_refused(
        &submit(&node, encode_block(&wrong_kind, &payload)).await,
        422,
        "block_kind_not_allowed",
    );
    // Bytes that are no block at all.
    check_refused(
        &submit(&node, b"not a block".to_vec()).await,
        422,
        "block_malformed",
    );
    // Nothing of the above was stored.
    assert_eq!(node.state.chain().unwrap().tip(ChainId::Dataset).height, 0);
    // The honest block still goes in.
    assert_eq!(submit(&node, encode_block(&header, &payload)).await.0, 201);
}

#[tokio::test]
async fn bad_explorer_queries_are_refused() {
    let node = Node::start().await;
    check_refused(
        &node.get("/chain/Z/blocks", None).await,
        400,
        "invalid_request",
    );
    check_refused(
        &node.get("/chain/A/blocks?limit=0", None).await,
        400,
        "invalid_request",
    );
    let too_many = blyan_chain::BLOCKS_PAGE_COUNT_MAX + 1;
    check_refused(
        &node
            .get(&format!("/chain/A/blocks?limit={too_many}"), None)
            .await,
        400,
        "invalid_request",
    );
    check_refused(
        &node.get("/chain/A/blocks?from=x", None).await,
        400,
        "invalid_request",
    );
    check_refused(&node.get("/blocks/xyz", None).await, 400, "invalid_request");
    let unknown = "ab".repeat(32);
    check_refused(
        &node.get(&format!("/blocks/{unknown}"), None).await,
        404,
        "block_not_found",
    );
    check_refused(
        &node.get(&format!("/blocks/{unknown}/payload"), None).await,
        404,
        "block_not_found",
    );
}

#[tokio::test]
async fn chain_summary_expert_versions_and_the_model_on_chain() {
    let node = Node::serving().await;
    let (status, summary) = node.get("/chain/B", None).await;
    assert_eq!(status, 200, "{summary}");
    let store = node.state.chain().unwrap();
    let tip = store.tip(ChainId::Parameters);
    assert_eq!(summary["tip_height"], tip.height);
    assert_eq!(summary["tip_hash"], tip.hash.to_string());
    // A node keeps forks (blocks appended apart on two nodes) so its network converges.
    assert_eq!(summary["fork_rule"], "allow_forks");
    assert_eq!(summary["pow_difficulty_bits"], 0);
    // POST /blocks streams payloads: the store's own limit is the one announced, above the
    // 256 MiB a buffered body once capped it at.
    let payload_max = summary["payload_bytes_max"].as_u64().unwrap();
    assert_eq!(payload_max, store.config().payload_bytes_max, "{summary}");
    assert!(payload_max > 256 << 20, "{summary}");
    let (status, body) = node.get("/chain/Z", None).await;
    check_refused(&(status, body), 400, "invalid_request");

    let expert = blyan_chain::ExpertName::new(3, 7).unwrap();
    let current = store.expert_current(expert).unwrap().unwrap();
    let (status, version) = node.get("/chain/experts/layer3.expert7", None).await;
    assert_eq!(status, 200, "{version}");
    assert_eq!(version["expert"], "layer3.expert7");
    assert_eq!(version["version"], 1);
    assert_eq!(version["block"], current.hash.to_string());
    let (status, body) = node.get("/chain/experts/layer3.expert999", None).await;
    check_refused(&(status, body), 404, "unknown_expert");
    let (status, body) = node.get("/chain/experts/expert7", None).await;
    check_refused(&(status, body), 400, "invalid_request");

    let (status, model) = node.get("/model", None).await;
    assert_eq!(status, 200, "{model}");
    let newest = blyan_moe::current_model(store).unwrap().0.to_string();
    assert_eq!(model["chain"]["meta_block"], newest);
    assert_eq!(model["chain"]["model"], "untrained seed");
    assert_eq!(model["serving"]["meta_block"], newest);
}

#[tokio::test]
async fn a_node_without_a_model_says_so_on_the_model_route() {
    let node = Node::start().await;
    let (status, model) = node.get("/model", None).await;
    assert_eq!(status, 200, "{model}");
    assert!(
        model["chain"].is_null() && model["serving"].is_null(),
        "{model}"
    );
}

#[tokio::test]
async fn a_block_pages_its_dependents() {
    let node = Node::start_with(|config| {
        config.chain.fork_rules.dataset = blyan_chain::ForkRule::AllowForks;
    })
    .await;
    let store = std::sync::Arc::clone(node.state.chain().unwrap());
    let genesis = store.tip(ChainId::Dataset);
    let key = AuthorKey::generate();
    // Five children of chain D's genesis block.
    for index in 0..5u8 {
        let payload = [index];
        let mut header = BlockHeader::new_child(
            &genesis,
            BlockKind::DatasetEntry,
            &payload,
            blyan_chain::GENESIS_TIMESTAMP_MS + 1,
        );
        header.sign(&key);
        assert_eq!(submit(&node, encode_block(&header, &payload)).await.0, 201);
    }
    let all: Vec<String> = store
        .dependents(&genesis.hash)
        .unwrap()
        .iter()
        .map(|dependent| dependent.block.to_string())
        .collect();
    assert_eq!(all.len(), 5);
    let mut paged = Vec::new();
    let mut path = format!("/blocks/{}?limit=2", genesis.hash);
    loop {
        let (status, shown) = node.get(&path, None).await;
        assert_eq!(status, 200, "{shown}");
        let page = shown["dependents"].as_array().unwrap();
        assert!(page.len() <= 2, "{shown}");
        paged.extend(page.iter().map(|d| d["block"].as_str().unwrap().to_owned()));
        match shown["dependents_next"].as_str() {
            Some(next) => path = format!("/blocks/{}?limit=2&after={next}", genesis.hash),
            None => break,
        }
    }
    assert_eq!(paged, all);
    // Without a limit, a page of up to 100.
    let (_, shown) = node.get(&format!("/blocks/{}", genesis.hash), None).await;
    assert_eq!(shown["dependents"].as_array().unwrap().len(), 5);
    assert!(shown["dependents_next"].is_null());
    for query in ["limit=0", "limit=1001", "after=xyz"] {
        check_refused(
            &node
                .get(&format!("/blocks/{}?{query}", genesis.hash), None)
                .await,
            400,
            "invalid_request",
        );
    }
    let (status, shown) = node
        .get(&format!("/blocks/{}?limit=1000", genesis.hash), None)
        .await;
    assert_eq!(status, 200, "{shown}");
}

#[tokio::test]
async fn the_model_and_expert_versions_are_read_once_per_append() {
    let node = Node::serving().await;
    let state = &node.state;
    let (block, document) = state.newest_model_on_chain().await.unwrap().unwrap();
    let (again_block, again) = state.newest_model_on_chain().await.unwrap().unwrap();
    assert_eq!(block, again_block);
    assert!(
        std::sync::Arc::ptr_eq(&document, &again),
        "the second read is the cached answer"
    );
    let versions = state.expert_versions().await.unwrap();
    assert!(std::sync::Arc::ptr_eq(
        &versions,
        &state.expert_versions().await.unwrap()
    ));
    let (status, model) = node.get("/model", None).await;
    assert_eq!(status, 200, "{model}");
    assert_eq!(model["chain"]["meta_block"], block.to_string());
    let (status, experts) = node.get("/experts", None).await;
    assert_eq!(status, 200, "{experts}");
    let expert = &experts["experts"][0];
    let current = versions
        .iter()
        .find(|version| version.expert.layer() == 0 && version.expert.expert() == 0)
        .unwrap();
    assert_eq!(expert["block"], current.hash.to_string());

    // An append (any block) makes the next read compute again: the same answer, a new value.
    let payload = b"entry".to_vec();
    let header = dataset_block(&node, &AuthorKey::generate(), &payload);
    assert_eq!(submit(&node, encode_block(&header, &payload)).await.0, 201);
    let (after_block, after) = state.newest_model_on_chain().await.unwrap().unwrap();
    assert_eq!(after_block, block);
    assert_eq!(*after, *document);
    assert!(!std::sync::Arc::ptr_eq(&after, &document));
    let after_versions = state.expert_versions().await.unwrap();
    assert_eq!(*after_versions, *versions);
    assert!(!std::sync::Arc::ptr_eq(&after_versions, &versions));
}
