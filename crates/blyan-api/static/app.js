// The Blyan node's page: streaming chat (free tier or signed in), Sign-In with Ethereum through
// the browser's EIP-1193 provider, balance and ledger history, chain explorer, expert dashboard,
// the learner's progress and Proof-of-Learning's claims, votes and certificates, dataset samples
// with commit-reveal votes (commitments computed here with blake3.js).
// Plain JavaScript, no build step; it talks only to the node that served it.
"use strict";

const $ = (id) => document.getElementById(id);

const session = {
  accessToken: null,
  refreshToken: null,
  wallet: null,
};

function notice(text) {
  const element = $("notice");
  element.textContent = text || "";
  element.hidden = !text;
}

function errorText(body, status) {
  if (body && body.error) return `${body.error.code}: ${body.error.message}`;
  return `HTTP ${status}`;
}

// fetch with the access token; refreshes it once when it has expired.
async function api(path, options = {}, retried = false) {
  const headers = Object.assign({}, options.headers || {});
  if (session.accessToken) headers.Authorization = `Bearer ${session.accessToken}`;
  if (options.body && !headers["Content-Type"]) headers["Content-Type"] = "application/json";
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401 && session.refreshToken && !retried) {
    const body = await response.clone().json().catch(() => null);
    if (body && body.error && body.error.code === "token_expired" && (await refresh())) {
      return api(path, options, true);
    }
  }
  return response;
}

async function apiJson(path, options) {
  const response = await api(path, options);
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new Error(errorText(body, response.status));
  return body;
}

// ---- wallet sign-in (EIP-4361 over EIP-1193) ----

function utf8Hex(text) {
  return "0x" + Array.from(new TextEncoder().encode(text), (b) => b.toString(16).padStart(2, "0")).join("");
}

function siweMessage(address, nonce) {
  return [
    `${location.host} wants you to sign in with your Ethereum account:`,
    address,
    "",
    "Sign in to Blyan to chat with the on-chain model and pay in BLY.",
    "",
    `URI: ${location.origin}/`,
    "Version: 1",
    `Chain ID: ${nonce.chain_id}`,
    `Nonce: ${nonce.nonce}`,
    `Issued At: ${new Date().toISOString()}`,
    `Expiration Time: ${nonce.expires_at}`,
  ].join("\n");
}

function storeTokens(tokens) {
  session.accessToken = tokens.access_token;
  session.refreshToken = tokens.refresh_token;
  session.wallet = tokens.wallet;
  sessionStorage.setItem("blyan.refresh", tokens.refresh_token);
}

async function signIn() {
  notice("");
  const provider = window.ethereum;
  if (!provider) {
    notice("No wallet found (install an EIP-1193 wallet such as MetaMask). The free tier works without one.");
    return;
  }
  try {
    const accounts = await provider.request({ method: "eth_requestAccounts" });
    if (!accounts || !accounts.length) throw new Error("the wallet shared no account");
    const nonce = await apiJson(`/auth/nonce?address=${encodeURIComponent(accounts[0])}`);
    const message = siweMessage(nonce.address, nonce);
    const signature = await provider.request({ method: "personal_sign", params: [utf8Hex(message), accounts[0]] });
    const tokens = await apiJson("/auth/verify", {
      method: "POST",
      body: JSON.stringify({ message, signature }),
    });
    storeTokens(tokens);
    showWallet();
  } catch (error) {
    notice(`Sign-in failed: ${error.message || error}`);
  }
}

async function refresh() {
  if (!session.refreshToken) return false;
  const response = await fetch("/auth/refresh", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ refresh_token: session.refreshToken }),
  });
  if (!response.ok) {
    forgetSession();
    return false;
  }
  storeTokens(await response.json());
  return true;
}

function forgetSession() {
  session.accessToken = null;
  session.refreshToken = null;
  session.wallet = null;
  sessionStorage.removeItem("blyan.refresh");
  showWallet();
}

async function signOut() {
  await api("/auth/logout", { method: "POST" }).catch(() => null);
  forgetSession();
}

async function showWallet() {
  const signedIn = Boolean(session.wallet);
  $("sign-in").hidden = signedIn;
  $("sign-out").hidden = !signedIn;
  $("wallet-address").textContent = signedIn ? session.wallet : "not signed in (free tier)";
  $("wallet-balance").textContent = "";
  if (!$("tab-wallet").hidden) loadWalletHistory();
  if (!signedIn) return;
  try {
    const balance = await apiJson("/wallet/balance");
    $("wallet-balance").textContent = `${balance.available} ${balance.unit}`;
  } catch (error) {
    $("wallet-balance").textContent = `balance unavailable (${error.message})`;
  }
}

// ---- chat with streaming output ----

let chatAbort = null;
const history = [];

function addMessage(role, text) {
  const element = document.createElement("div");
  element.className = `message ${role}`;
  element.textContent = text;
  $("chat-log").appendChild(element);
  $("chat-log").scrollTop = $("chat-log").scrollHeight;
  return element;
}

// Reads Server-Sent Events from a fetch response body, calling onEvent(name, data).
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let boundary;
    while ((boundary = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, boundary);
      buffer = buffer.slice(boundary + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(name, JSON.parse(data.join("\n")));
    }
  }
}

function showExpertsUsed(layers) {
  const body = $("experts-used").querySelector("tbody");
  body.replaceChildren();
  for (const layer of layers || []) {
    const row = body.insertRow();
    row.insertCell().textContent = layer.layer;
    row.insertCell().textContent = layer.experts.join(", ");
  }
}

function showUsage(done) {
  const usage = done.usage;
  const cost = done.cost;
  const paid = cost.tier === "paid" ? `charged ${cost.charged} ${cost.unit}` : "free tier";
  const cache = done.cache ? `, expert cache ${done.cache.hits} hits / ${done.cache.misses} misses` : "";
  $("chat-usage").textContent =
    `${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens, ${paid}, finished: ${done.finish_reason}${cache}`;
}

async function sendChat(event) {
  event.preventDefault();
  const text = $("chat-input").value.trim();
  if (!text || chatAbort) return;
  notice("");
  $("chat-input").value = "";
  history.push({ role: "user", content: text });
  addMessage("user", text);
  const answer = addMessage("assistant", "");
  chatAbort = new AbortController();
  $("chat-send").disabled = true;
  $("chat-stop").disabled = false;
  let reply = "";
  try {
    const response = await api("/chat/stream", {
      method: "POST",
      body: JSON.stringify({ messages: history, max_tokens: Number($("chat-max-tokens").value) }),
      signal: chatAbort.signal,
    });
    if (!response.ok) {
      const body = await response.json().catch(() => null);
      throw new Error(errorText(body, response.status));
    }
    await readEvents(response, (name, data) => {
      if (name === "delta") {
        reply += data.text;
        answer.textContent = reply;
        $("chat-log").scrollTop = $("chat-log").scrollHeight;
      } else if (name === "done") {
        showUsage(data);
        showExpertsUsed(data.experts);
        if (session.wallet) showWallet();
      } else if (name === "error") {
        throw new Error(errorText(data, 500));
      }
    });
    history.push({ role: "assistant", content: reply });
  } catch (error) {
    if (error.name === "AbortError") {
      answer.textContent = reply + " [stopped]";
      history.push({ role: "assistant", content: reply });
    } else {
      answer.className = "message error";
      answer.textContent = reply ? `${reply}\n${error.message}` : error.message;
      history.pop();
    }
  } finally {
    chatAbort = null;
    $("chat-send").disabled = false;
    $("chat-stop").disabled = true;
  }
}

// ---- chain explorer ----

async function loadBlocks() {
  const chain = $("explorer-chain").value;
  const from = Number($("explorer-from").value) || 0;
  const body = $("explorer-blocks").querySelector("tbody");
  body.replaceChildren();
  $("explorer-block").textContent = "";
  try {
    const answer = await apiJson(`/chain/${chain}/blocks?from=${from}&limit=50`);
    const blocks = Array.isArray(answer) ? answer : answer.blocks || [];
    for (const block of blocks) {
      const row = body.insertRow();
      row.insertCell().textContent = block.height ?? block.index ?? "";
      const hash = row.insertCell();
      hash.className = "hash";
      hash.textContent = block.hash;
      hash.addEventListener("click", () => showBlock(block.hash));
      row.insertCell().textContent = block.kind ?? block.block_type ?? "";
      row.insertCell().textContent = block.payload_bytes ?? block.payload_len ?? "";
    }
    if (!blocks.length) $("explorer-block").textContent = "No blocks on this chain from that height.";
  } catch (error) {
    $("explorer-block").textContent = error.message;
  }
}

async function showBlock(hash) {
  try {
    const block = await apiJson(`/blocks/${encodeURIComponent(hash)}`);
    $("explorer-block").textContent = JSON.stringify(block, null, 2);
  } catch (error) {
    $("explorer-block").textContent = error.message;
  }
}

// ---- expert dashboard ----

async function loadExperts() {
  const body = $("experts-table").querySelector("tbody");
  body.replaceChildren();
  try {
    const answer = await apiJson("/experts");
    const cache = answer.cache;
    $("experts-cache").textContent = cache
      ? `cache: ${cache.hits} hits, ${cache.misses} misses, ${cache.resident_bytes} of ${cache.capacity_bytes} bytes held`
      : "";
    for (const expert of answer.experts || []) {
      const row = body.insertRow();
      row.insertCell().textContent = expert.id;
      row.insertCell().textContent = expert.version ?? "";
      row.insertCell().textContent = expert.uses ?? 0;
      row.insertCell().textContent = expert.cached ? "yes" : "no";
    }
  } catch (error) {
    $("experts-cache").textContent = error.message;
  }
}

// ---- learning progress ----

const SVG_NS = "http://www.w3.org/2000/svg";
// Refreshes the open tab's live view (learning progress, Proof-of-Learning).
let tabTimer = null;

function svgElement(name, attributes) {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  return element;
}

function loss(value) {
  return typeof value === "number" ? value.toFixed(4) : "–";
}

// Draws the held-out (and training) loss of `points` ({step, eval_loss, train_loss}) as SVG;
// the plotted values stay on the element as data attributes.
function drawCurve(svg, points) {
  svg.replaceChildren();
  svg.dataset.steps = points.map((p) => p.step).join(",");
  svg.dataset.evalLosses = points.map((p) => p.eval_loss).join(",");
  if (points.length === 0) return;
  const width = 640, height = 260, left = 56, right = 16, top = 16, bottom = 36;
  const steps = points.map((p) => p.step);
  const losses = points.flatMap((p) => (typeof p.train_loss === "number" ? [p.eval_loss, p.train_loss] : [p.eval_loss]));
  const [minX, maxX] = [Math.min(...steps), Math.max(...steps)];
  const [minY, maxY] = [Math.min(...losses), Math.max(...losses)];
  const x = (step) => left + (maxX === minX ? 0.5 : (step - minX) / (maxX - minX)) * (width - left - right);
  const y = (value) => height - bottom - (maxY === minY ? 0.5 : (value - minY) / (maxY - minY)) * (height - top - bottom);
  svg.append(
    svgElement("line", { class: "axis", x1: left, y1: height - bottom, x2: width - right, y2: height - bottom }),
    svgElement("line", { class: "axis", x1: left, y1: top, x2: left, y2: height - bottom }),
  );
  const label = (text, attributes) => {
    const element = svgElement("text", Object.assign({ class: "label" }, attributes));
    element.textContent = text;
    svg.append(element);
  };
  label(maxY.toFixed(3), { x: 4, y: top + 4 });
  label(minY.toFixed(3), { x: 4, y: height - bottom });
  label(`step ${minX}`, { x: left, y: height - 12 });
  label(`step ${maxX}`, { x: width - right - 70, y: height - 12 });
  const train = points.filter((p) => typeof p.train_loss === "number");
  if (train.length > 0) {
    svg.append(svgElement("polyline", {
      id: "learning-train-line", class: "train",
      points: train.map((p) => `${x(p.step).toFixed(1)},${y(p.train_loss).toFixed(1)}`).join(" "),
    }));
  }
  svg.append(svgElement("polyline", {
    id: "learning-eval-line", class: "eval",
    points: points.map((p) => `${x(p.step).toFixed(1)},${y(p.eval_loss).toFixed(1)}`).join(" "),
  }));
  for (const p of points) {
    const dot = svgElement("circle", { class: "point", cx: x(p.step).toFixed(1), cy: y(p.eval_loss).toFixed(1), r: 2.5 });
    const title = svgElement("title", {});
    title.textContent = `step ${p.step}: held-out ${loss(p.eval_loss)}, training ${loss(p.train_loss)}`;
    dot.append(title);
    svg.append(dot);
  }
}

async function loadLearning() {
  const summary = $("learning-summary");
  const shares = $("learning-shares").querySelector("tbody");
  try {
    const status = await apiJson("/learning");
    shares.replaceChildren();
    if (!status.enabled) {
      summary.textContent = "Learning is off on this node (learning.enabled in node.yaml).";
      drawCurve($("learning-curve"), []);
      $("learning-candidate").textContent = "";
      return;
    }
    const baseline = status.baseline ? loss(status.baseline.eval_loss) : "–";
    summary.textContent = `${status.state}${status.paused_for_inference ? " (waiting for chats)" : ""}: ` +
      `${status.steps} steps, ${status.tokens} tokens, experts ${status.experts.join(", ")}; ` +
      `held-out loss ${baseline} served → ${loss(status.last_eval_loss)} now` +
      (status.error ? `; ${status.error}` : "");
    drawCurve($("learning-curve"), status.history || []);
    const candidate = status.last_candidate;
    $("learning-candidate").textContent = candidate
      ? `last candidate at step ${candidate.step}: held-out loss ${loss(candidate.eval_loss_before)} → ${loss(candidate.eval_loss_after)}, ` +
        (candidate.published ? "published" : "not published") + ` (${status.candidates_made} made)`
      : "no candidate yet";
    (status.expert_shares || []).forEach((layer, index) => {
      const row = shares.insertRow();
      row.insertCell().textContent = index;
      row.insertCell().textContent = layer.map((share) => `${(share * 100).toFixed(1)}%`).join("  ");
    });
  } catch (error) {
    summary.textContent = error.message;
  }
  document.body.dataset.learningLoaded = String(Date.now());
}

// ---- Proof-of-Learning ----

const CLAIM_STATUS = {
  awaiting_beacon: "awaiting beacon",
  voting: "voting",
  accepted: "accepted",
  rejected: "rejected",
  expired: "expired",
};

const VERDICTS = {
  accept: "accept",
  below_threshold: "below threshold",
  not_reproduced: "not reproduced",
  unloadable: "unloadable",
  overfit: "overfit (hidden QA set)",
};

/** A vote's hidden-QA result: its improvement, and why it counts for nothing when it does not. */
function hiddenResult(hidden) {
  if (!hidden) return "—";
  const shown = percent(hidden.losses.delta_bps);
  return ["mismatch", "reused", "overdue"].includes(hidden.status) ? `${shown} (void: ${hidden.status})` : shown;
}

const PAYMENT_KINDS = {
  learning: "learning reward",
  validation: "validation reward",
  data: "data reward",
};

// Basis points as a signed percentage ("+1.25 %").
function percent(bps, signed = true) {
  const text = `${(Math.abs(bps) / 100).toFixed(2)} %`;
  if (!signed || bps === 0) return text;
  return `${bps > 0 ? "+" : "−"}${text}`;
}

// Micro-nats as nats.
function nats(micros) {
  return typeof micros === "number" ? (micros / 1e6).toFixed(4) : "–";
}

function short(text) {
  return text && text.length > 14 ? `${text.slice(0, 8)}…${text.slice(-4)}` : text || "";
}

// An element with a class and text (node data only ever lands in textContent).
function element(name, className, text) {
  const created = document.createElement(name);
  if (className) created.className = className;
  if (text !== undefined) created.textContent = text;
  return created;
}

// A table with a header row `columns` and one row per entry of `rows` (arrays of cell texts).
function table(className, columns, rows) {
  const created = element("table", className);
  const head = created.createTHead().insertRow();
  for (const column of columns) head.appendChild(element("th", "", column));
  const body = created.createTBody();
  for (const cells of rows) {
    const row = body.insertRow();
    for (const cell of cells) row.insertCell().textContent = cell;
  }
  return created;
}

function lossesText(losses) {
  return `loss ${nats(losses.base)} → ${nats(losses.candidate)} (Δ ${percent(losses.delta_bps)})`;
}

function showClaim(claim, bondText) {
  const article = element("article", "claim");
  article.dataset.claim = claim.claim;
  article.dataset.status = claim.status;
  const heading = element("h3");
  const badge = element("span", `badge status-${claim.status}`, CLAIM_STATUS[claim.status] || claim.status);
  heading.append(badge, ` claim ${short(claim.claim)} by ${short(claim.author)} at height ${claim.height}`);
  heading.title = claim.claim;
  article.appendChild(heading);

  const candidates = claim.candidates.map((candidate) => {
    const what = candidate.expert ? `${candidate.expert} v${candidate.version}` : `${candidate.kind} v${candidate.version}`;
    return candidate.candidate ? what : `${what} (served)`;
  });
  article.appendChild(element("p", "candidates", `candidates: ${candidates.join(", ") || "none"}`));
  article.appendChild(element("p", "claimed", `claimed by the author: ${lossesText(claim.claimed)}; ` +
    `${claim.data_blocks} dataset entries credited`));
  article.appendChild(element("p", "muted", claim.seed
    ? `evaluation seed ${short(claim.seed)} from beacon ${short(claim.beacon)}`
    : "waiting for a beacon to seed the evaluation"));

  if (claim.votes.length) {
    article.appendChild(table("votes", ["validator", "verdict", "base loss", "candidate loss", "Δ", "hidden Δ", "detail"],
      claim.votes.map((vote) => [
        short(vote.validator), VERDICTS[vote.verdict] || vote.verdict,
        nats(vote.losses.base), nats(vote.losses.candidate), percent(vote.losses.delta_bps),
        hiddenResult(vote.hidden), vote.detail,
      ])));
  } else {
    article.appendChild(element("p", "muted", "no votes yet"));
  }

  const certificate = claim.certificate;
  if (certificate) {
    const improvement = typeof certificate.improvement_bps === "number"
      ? `, certified improvement ${percent(certificate.improvement_bps)}` : "";
    const bond = certificate.bond === "refund" ? `bond of ${bondText} refunded` : `bond of ${bondText} burned`;
    const outcome = element("p", `outcome outcome-${certificate.outcome}`,
      `${certificate.outcome} by certificate ${short(certificate.block)} (${certificate.votes.length} ${certificate.votes.length === 1 ? "vote" : "votes"})${improvement}; ${bond}`);
    outcome.title = certificate.block;
    article.appendChild(outcome);
    if (certificate.payments.length) {
      article.appendChild(table("payments", ["payment", "to", "amount"],
        certificate.payments.map((payment) => [
          PAYMENT_KINDS[payment.kind] || payment.kind, short(payment.to), `${payment.amount} BLY`,
        ])));
    }
  }
  return article;
}

async function loadPol() {
  const rules = $("pol-rules");
  const validators = $("pol-validators").querySelector("tbody");
  const claims = $("pol-claims");
  try {
    const status = await apiJson("/pol/status");
    validators.replaceChildren();
    claims.replaceChildren();
    const bondText = `${status.candidate_bond} BLY`;
    const evaluation = status.eval
      ? `; each vote evaluates ${status.eval.windows} windows of ${status.eval.positions} tokens drawn from pool ${short(status.eval.pool)}`
      : "";
    const self = status.node_address
      ? `; this node (${short(status.node_address)}) ${status.node_validates ? "validates" : "does not validate"}`
      : "";
    rules.textContent = status.mode === "pow"
      ? "mode pow: new versions are served as they land; nothing is certified."
      : `mode ${status.mode}: a candidate is served once validators holding more than 2/3 of stake accept ` +
        `an improvement of at least ${percent(status.threshold_bps, false)}; a claim locks a bond of ${bondText}, ` +
        `undecided claims expire after ${status.expiry_blocks} blocks${evaluation}${self}.`;
    for (const validator of status.validators) {
      const row = validators.insertRow();
      row.insertCell().textContent = validator.address;
      row.insertCell().textContent = validator.stake;
      const state = row.insertCell();
      state.textContent = validator.slashed ? "slashed" : "active";
      if (validator.slashed) state.className = "slashed";
    }
    $("pol-empty").hidden = status.claims.length > 0;
    for (const claim of status.claims) claims.appendChild(showClaim(claim, bondText));
  } catch (error) {
    rules.textContent = error.message;
  }
  document.body.dataset.polLoaded = String(Date.now());
}

// ---- dataset samples ----

async function loadData() {
  const progress = $("data-progress");
  const body = $("data-samples").querySelector("tbody");
  $("data-submit").disabled = !session.accessToken;
  $("data-signed-out").hidden = Boolean(session.accessToken);
  try {
    const info = await apiJson("/datasets/progress");
    const counts = Object.entries(info.states).filter(([, count]) => count > 0)
      .map(([state, count]) => `${count} ${state}`).join(", ");
    progress.textContent = `L1 worker: ${info.scored} scored, ${info.waiting} waiting` +
      `${info.teacher ? "" : " (no teacher yet)"}${info.last_error ? `; last error: ${info.last_error}` : ""}` +
      `; samples: ${counts || "none"}`;
    const state = $("data-state").value;
    const list = await apiJson(`/datasets?limit=100${state ? `&state=${state}` : ""}`);
    body.replaceChildren();
    for (const sample of list.samples) {
      const row = body.insertRow();
      const link = document.createElement("a");
      link.href = "#";
      link.textContent = short(sample.hash);
      link.addEventListener("click", (event) => { event.preventDefault(); showSample(sample.hash); });
      row.insertCell().appendChild(link);
      row.insertCell().textContent = sample.state;
      row.insertCell().textContent = short(sample.contributor);
      row.insertCell().textContent = sample.licence;
      row.insertCell().textContent = sample.text.length > 80 ? `${sample.text.slice(0, 80)}…` : sample.text;
      row.dataset.sample = sample.hash;
      voteCell(row.insertCell(), sample);
    }
  } catch (error) {
    progress.textContent = error.message;
  }
  document.body.dataset.dataLoaded = String(Date.now());
}

// ---- L2 votes: commit here, reveal later ----

const VOTE_COMMITMENT_CONTEXT = "blyan-data 1 vote commitment";

function hexBytes(hex) {
  const clean = hex.startsWith("0x") ? hex.slice(2) : hex;
  return Uint8Array.from(clean.match(/../g) || [], (pair) => parseInt(pair, 16));
}

// blake3_derive_key(context, sample ‖ verdict ‖ salt ‖ voter), as `blyan_quality::vote_commitment`.
function voteCommitment(sample, verdict, salt, voter) {
  const parts = [hexBytes(sample), new TextEncoder().encode(verdict), salt, hexBytes(voter)];
  const material = new Uint8Array(parts.reduce((length, part) => length + part.length, 0));
  let at = 0;
  for (const part of parts) {
    material.set(part, at);
    at += part.length;
  }
  return blake3.deriveKey(VOTE_COMMITMENT_CONTEXT, material);
}

// A committed vote's verdict and salt, kept in this browser until its reveal.
const voteKey = (sample, wallet) => `blyan.vote.${sample}.${wallet.toLowerCase()}`;

function storedVote(sample) {
  if (!session.wallet) return null;
  try {
    return JSON.parse(localStorage.getItem(voteKey(sample, session.wallet)) || "null");
  } catch {
    return null;
  }
}

function voteButton(label, className, action) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = className;
  button.textContent = label;
  button.addEventListener("click", action);
  return button;
}

// The signed-in wallet's vote controls for `sample`: commit while voting, reveal while revealing.
function voteCell(cell, sample) {
  if (!session.wallet) return;
  const stored = storedVote(sample.hash);
  const mine = sample.votes.find((vote) => vote.voter.toLowerCase() === session.wallet.toLowerCase());
  if (mine && mine.verdict) {
    cell.textContent = `revealed: ${mine.verdict}`;
  } else if (stored && sample.state === "revealing") {
    cell.appendChild(voteButton(`reveal ${stored.verdict}`, "vote-reveal", () => revealVote(sample.hash, stored)));
  } else if (mine && !stored) {
    cell.textContent = `committed ${mine.stake} BLY; its salt is not in this browser`;
  } else if (stored) {
    cell.textContent = `committed ${mine ? `${mine.stake} BLY` : ""}; reveal when the commit window closes`;
  } else if (sample.state === "voting" && sample.contributor.toLowerCase() !== session.wallet.toLowerCase()) {
    const stake = document.createElement("input");
    stake.type = "number";
    stake.min = "1";
    stake.value = "10";
    stake.className = "vote-stake";
    stake.title = "stake, whole BLY";
    cell.append(stake,
      voteButton("accept", "vote-accept", () => commitVote(sample.hash, "accept", Number(stake.value))),
      voteButton("refuse", "vote-refuse", () => commitVote(sample.hash, "refuse", Number(stake.value))));
  }
}

async function commitVote(sample, verdict, stake) {
  const result = $("data-vote-result");
  const wallet = session.wallet;
  const salt = crypto.getRandomValues(new Uint8Array(32));
  const commitment = voteCommitment(sample, verdict, salt, wallet);
  try {
    // Kept before sending: a commit whose salt were lost could never be revealed.
    const pending = { verdict, salt: blake3.toHex(salt), commitment };
    localStorage.setItem(voteKey(sample, wallet), JSON.stringify(pending));
    const written = await apiJson(`/datasets/${sample}/commit`, {
      method: "POST",
      body: JSON.stringify({ commitment, stake }),
    }).catch((error) => {
      localStorage.removeItem(voteKey(sample, wallet));
      throw error;
    });
    localStorage.setItem(voteKey(sample, wallet), JSON.stringify(Object.assign(pending, { commit: written.block })));
    result.textContent = `vote committed as ${written.block}`;
  } catch (error) {
    result.textContent = `vote refused: ${error.message}`;
  }
  await loadData();
}

async function revealVote(sample, stored) {
  const result = $("data-vote-result");
  try {
    const written = await apiJson("/datasets/reveal", {
      method: "POST",
      body: JSON.stringify({ commit: stored.commit, verdict: stored.verdict, salt: stored.salt }),
    });
    localStorage.removeItem(voteKey(sample, session.wallet));
    result.textContent = `vote revealed as ${written.block}`;
  } catch (error) {
    result.textContent = `reveal refused: ${error.message}`;
  }
  await loadData();
}

async function showSample(hash) {
  const out = $("data-history");
  try {
    const sample = await apiJson(`/datasets/${hash}`);
    const lines = sample.history.map((event) =>
      `${new Date(event.timestamp_ms).toISOString()} ${event.event}${event.counted ? "" : " (not counted)"}: ${event.detail}`);
    out.textContent = `${sample.hash}: ${sample.state}\n${lines.join("\n")}`;
  } catch (error) {
    out.textContent = error.message;
  }
}

async function submitSample(event) {
  event.preventDefault();
  const result = $("data-result");
  try {
    const written = await apiJson("/datasets", {
      method: "POST",
      body: JSON.stringify({
        text: $("data-text").value,
        licence: $("data-licence").value,
        source: $("data-source").value,
        language: $("data-language").value,
      }),
    });
    result.textContent = `submitted as ${written.block}`;
    $("data-text").value = "";
    loadData();
  } catch (error) {
    result.textContent = `refused: ${error.message}`;
  }
}

// ---- wallet history ----

const LEDGER_KINDS = {
  genesis: "genesis",
  transfer: "transfer",
  mint: "minted",
  burn: "burned",
  reward: "reward",
  authorize: "chat payment held",
  capture: "chat payment",
  release: "hold released",
  expiry: "hold expired",
  bond_lock: "bond locked",
  bond_refund: "bond refunded",
  bond_burn: "bond burned",
};

async function loadWalletHistory() {
  const note = $("wallet-history-note");
  const body = $("wallet-history").querySelector("tbody");
  body.replaceChildren();
  if (!session.wallet) {
    note.textContent = "Sign in with your wallet to see its ledger entries: payments, rewards and bonds.";
  } else {
    try {
      const entries = await apiJson("/wallet/history?limit=100");
      note.textContent = entries.items.length ? `newest first, ${session.wallet}` : "No ledger entries yet.";
      for (const entry of entries.items) {
        const row = body.insertRow();
        row.dataset.kind = entry.kind;
        row.insertCell().textContent = new Date(entry.created_at_ms).toLocaleString();
        row.insertCell().textContent = LEDGER_KINDS[entry.kind] || entry.kind;
        const amount = row.insertCell();
        amount.textContent = `${entry.direction === "credit" ? "+" : "−"}${entry.amount} BLY`;
        amount.className = entry.direction;
        row.insertCell().textContent = entry.memo;
      }
    } catch (error) {
      note.textContent = error.message;
    }
  }
  document.body.dataset.walletHistoryLoaded = String(Date.now());
}

// ---- network ----

function bytes(count) {
  if (count >= 1e9) return `${(count / 1e9).toFixed(2)} GB`;
  if (count >= 1e6) return `${(count / 1e6).toFixed(1)} MB`;
  if (count >= 1e3) return `${(count / 1e3).toFixed(1)} kB`;
  return `${count} B`;
}

async function loadNetwork() {
  const self = $("network-self");
  const counters = $("network-counters");
  const body = $("network-peers").querySelector("tbody");
  try {
    const network = await apiJson("/p2p/peers");
    body.replaceChildren();
    if (!network.enabled) {
      self.textContent = "This node runs alone: start it with --p2p-listen or --peer (p2p.enabled) to join a network.";
      counters.textContent = "";
    } else {
      self.textContent = `peer ${network.peer_id}, listening on ${network.listen.join(", ")}`;
      const stats = network.stats;
      counters.textContent =
        `${stats.blocks_synced} blocks synced (${stats.blocks_refused} refused), ` +
        `${bytes(stats.payload_bytes_fetched)} of payloads fetched, ${bytes(stats.bytes_out)} served; ` +
        `headers: ${stats.headers_announced} announced, ${stats.headers_accepted} accepted, ` +
        `${stats.headers_rejected} rejected; ${stats.bad_ranges} bad ranges caught.`;
    }
    for (const peer of network.peers) {
      const row = body.insertRow();
      row.dataset.peer = peer.peer_id;
      row.insertCell().textContent = short(peer.peer_id);
      row.insertCell().textContent = peer.address ? short(peer.address) : "";
      const state = row.insertCell();
      state.textContent = peer.refused
        ? "refused: another network"
        : peer.banned_seconds
          ? `banned ${Math.ceil(peer.banned_seconds)} s`
          : peer.connected ? "connected" : "disconnected";
      if (peer.refused || peer.banned_seconds) state.className = "slashed";
      row.insertCell().textContent = peer.rtt_ms === undefined ? "" : `${peer.rtt_ms.toFixed(1)} ms`;
      row.insertCell().textContent = bytes(peer.bytes_in);
      row.insertCell().textContent = bytes(peer.bytes_out);
      row.insertCell().textContent =
        peer.offences ? `${peer.offences} (${peer.invalid_headers} bad headers, ${peer.bad_ranges} bad ranges)` : "0";
    }
    await loadNetworkExperts(network.enabled);
  } catch (error) {
    self.textContent = error.message;
  }
  document.body.dataset.networkLoaded = String(Date.now());
}

async function loadNetworkExperts(enabled) {
  const line = $("network-experts");
  const body = $("network-expert-peers").querySelector("tbody");
  body.replaceChildren();
  if (!enabled) {
    line.textContent = "";
    return;
  }
  const experts = await apiJson("/p2p/experts");
  line.textContent =
    `serving ${experts.serving.length} experts (${experts.refused} calls refused), ` +
    `${experts.replicated.length} replicated here; called remotely: ${experts.layer_calls} layers, ` +
    `${experts.calls} expert calls, ${experts.failures} failures, ${experts.failovers} failovers, ` +
    `${experts.hedges} hedged requests.`;
  const ms = (value) => (value === undefined || value === null ? "" : `${value.toFixed(1)} ms`);
  for (const peer of experts.peers) {
    const row = body.insertRow();
    row.insertCell().textContent = short(peer.peer);
    row.insertCell().textContent = peer.calls;
    row.insertCell().textContent = peer.failures;
    row.insertCell().textContent = ms(peer.latency_ms_mean);
    row.insertCell().textContent = ms(peer.latency_ms_p95);
    row.insertCell().textContent = peer.avoided_for_ms ? `avoided ${Math.ceil(peer.avoided_for_ms / 1000)} s` : "in use";
  }
}

// ---- start ----

const TABS = ["chat", "explorer", "experts", "learning", "pol", "data", "wallet", "network"];

function showTab(name) {
  for (const button of document.querySelectorAll("nav button")) {
    button.classList.toggle("active", button.dataset.tab === name);
  }
  for (const tab of TABS) $(`tab-${tab}`).hidden = tab !== name;
  if (name === "experts") loadExperts();
  clearInterval(tabTimer);
  if (name === "learning") {
    loadLearning();
    tabTimer = setInterval(loadLearning, 5000);
  }
  if (name === "pol") {
    loadPol();
    tabTimer = setInterval(loadPol, 5000);
  }
  if (name === "data") loadData();
  if (name === "wallet") loadWalletHistory();
  if (name === "explorer") loadBlocks();
  if (name === "network") {
    loadNetwork();
    tabTimer = setInterval(loadNetwork, 5000);
  }
}

// The served model's token limits (GET /model): the max tokens field is bounded by the
// context, and the line beside it says how the node counts.
async function showLimits() {
  try {
    const model = await apiJson("/model");
    const limits = model.limits;
    if (!limits) {
      $("chat-limits").textContent = "no model served";
      return;
    }
    const input = $("chat-max-tokens");
    input.max = String(limits.context_tokens_max - 1);
    if (Number(input.value) > limits.context_tokens_max - 1) input.value = String(limits.context_tokens_max - 1);
    $("chat-limits").dataset.contextTokensMax = String(limits.context_tokens_max);
    $("chat-limits").textContent =
      `context ${limits.context_tokens_max} tokens (prompt + completion); free tier answers up to ${limits.free_tier_completion_tokens_max}`;
  } catch (error) {
    $("chat-limits").textContent = `limits unknown: ${error.message}`;
  }
}

async function start() {
  for (const button of document.querySelectorAll("nav button")) {
    button.addEventListener("click", () => showTab(button.dataset.tab));
  }
  $("chat-form").addEventListener("submit", sendChat);
  $("chat-stop").addEventListener("click", () => chatAbort && chatAbort.abort());
  $("sign-in").addEventListener("click", signIn);
  $("sign-out").addEventListener("click", signOut);
  $("explorer-load").addEventListener("click", loadBlocks);
  $("experts-load").addEventListener("click", loadExperts);
  $("learning-load").addEventListener("click", loadLearning);
  $("pol-load").addEventListener("click", loadPol);
  $("data-load").addEventListener("click", loadData);
  $("data-state").addEventListener("change", loadData);
  $("data-form").addEventListener("submit", submitSample);
  $("wallet-history-load").addEventListener("click", loadWalletHistory);
  $("network-load").addEventListener("click", loadNetwork);
  try {
    const health = await apiJson("/health");
    $("node-status").textContent = `node ${health.version}${health.model ? `, model: ${health.model}` : ""}`;
  } catch (error) {
    $("node-status").textContent = `node unreachable: ${error.message}`;
  }
  await showLimits();
  session.refreshToken = sessionStorage.getItem("blyan.refresh");
  if (session.refreshToken) await refresh();
  showWallet();
  document.body.dataset.ready = "true";
}

start();
