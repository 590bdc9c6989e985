// The Blyan node's page: streaming chat (free tier or signed in), Sign-In with Ethereum through
// the browser's EIP-1193 provider, balance, chain explorer and expert dashboard.
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
let learningTimer = null;

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

// ---- start ----

function showTab(name) {
  for (const button of document.querySelectorAll("nav button")) {
    button.classList.toggle("active", button.dataset.tab === name);
  }
  for (const tab of ["chat", "explorer", "experts", "learning"]) $(`tab-${tab}`).hidden = tab !== name;
  if (name === "experts") loadExperts();
  clearInterval(learningTimer);
  if (name === "learning") {
    loadLearning();
    learningTimer = setInterval(loadLearning, 5000);
  }
  if (name === "explorer") loadBlocks();
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
  try {
    const health = await apiJson("/health");
    $("node-status").textContent = `node ${health.version}${health.model ? `, model: ${health.model}` : ""}`;
  } catch (error) {
    $("node-status").textContent = `node unreachable: ${error.message}`;
  }
  session.refreshToken = sessionStorage.getItem("blyan.refresh");
  if (session.refreshToken) await refresh();
  showWallet();
  document.body.dataset.ready = "true";
}

start();
