// BLAKE3 (hash and derive_key modes, 32-byte output) in plain JavaScript, after the reference
// implementation in the BLAKE3 paper's repository (BLAKE3-team/BLAKE3, reference_impl.rs, CC0).
// The page computes L2 vote commitments with it, so a wallet's verdict never leaves the browser
// before its reveal. Checked against the Rust `blake3` crate by the page's Chromium test.
"use strict";

const blake3 = (() => {
  const IV = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
  const PERMUTATION = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8];
  const CHUNK_START = 1, CHUNK_END = 2, PARENT = 4, ROOT = 8;
  const DERIVE_KEY_CONTEXT = 32, DERIVE_KEY_MATERIAL = 64;
  const BLOCK_LEN = 64, CHUNK_LEN = 1024;

  const rotr = (x, n) => ((x >>> n) | (x << (32 - n))) >>> 0;

  function g(s, a, b, c, d, x, y) {
    s[a] = (s[a] + s[b] + x) >>> 0;
    s[d] = rotr(s[d] ^ s[a], 16);
    s[c] = (s[c] + s[d]) >>> 0;
    s[b] = rotr(s[b] ^ s[c], 12);
    s[a] = (s[a] + s[b] + y) >>> 0;
    s[d] = rotr(s[d] ^ s[a], 8);
    s[c] = (s[c] + s[d]) >>> 0;
    s[b] = rotr(s[b] ^ s[c], 7);
  }

  function round(s, m) {
    g(s, 0, 4, 8, 12, m[0], m[1]);
    g(s, 1, 5, 9, 13, m[2], m[3]);
    g(s, 2, 6, 10, 14, m[4], m[5]);
    g(s, 3, 7, 11, 15, m[6], m[7]);
    g(s, 0, 5, 10, 15, m[8], m[9]);
    g(s, 1, 6, 11, 12, m[10], m[11]);
    g(s, 2, 7, 8, 13, m[12], m[13]);
    g(s, 3, 4, 9, 14, m[14], m[15]);
  }

  // The 16 output words of compressing `words` (one 64-byte block) under chaining value `cv`.
  function compress(cv, words, counter, blockLen, flags) {
    const s = [...cv, IV[0], IV[1], IV[2], IV[3],
      counter >>> 0, Math.floor(counter / 0x100000000) >>> 0, blockLen, flags];
    let m = words.slice();
    for (let r = 0; r < 7; r++) {
      round(s, m);
      if (r < 6) m = PERMUTATION.map((i) => m[i]);
    }
    for (let i = 0; i < 8; i++) {
      s[i] = (s[i] ^ s[i + 8]) >>> 0;
      s[i + 8] = (s[i + 8] ^ cv[i]) >>> 0;
    }
    return s;
  }

  // Little-endian words of a block of at most 64 bytes, zero-padded.
  function blockWords(bytes) {
    const padded = new Uint8Array(BLOCK_LEN);
    padded.set(bytes);
    const view = new DataView(padded.buffer);
    return Array.from({ length: 16 }, (_, i) => view.getUint32(4 * i, true));
  }

  // What a chunk or parent node leaves to compress last: its chaining value, or the root.
  const output = (cv, words, counter, blockLen, flags) => ({ cv, words, counter, blockLen, flags });
  const chainingValue = (o) => compress(o.cv, o.words, o.counter, o.blockLen, o.flags).slice(0, 8);
  const parent = (left, right, key, flags) => output(key, [...left, ...right], 0, BLOCK_LEN, flags | PARENT);

  function chunkOutput(chunk, key, counter, flags) {
    const blocks = Math.max(1, Math.ceil(chunk.length / BLOCK_LEN));
    let cv = key;
    for (let b = 0; b < blocks - 1; b++) {
      const words = blockWords(chunk.subarray(b * BLOCK_LEN, (b + 1) * BLOCK_LEN));
      cv = compress(cv, words, counter, BLOCK_LEN, flags | (b === 0 ? CHUNK_START : 0)).slice(0, 8);
    }
    const last = chunk.subarray((blocks - 1) * BLOCK_LEN);
    return output(cv, blockWords(last), counter, last.length, flags | (blocks === 1 ? CHUNK_START : 0) | CHUNK_END);
  }

  // The 32-byte hash of `input` (a Uint8Array) under `key` (8 words) and mode `flags`.
  function hashWith(input, key, flags) {
    const chunks = Math.max(1, Math.ceil(input.length / CHUNK_LEN));
    const stack = [];
    let last = null;
    for (let c = 0; c < chunks; c++) {
      const chunk = chunkOutput(input.subarray(c * CHUNK_LEN, (c + 1) * CHUNK_LEN), key, c, flags);
      if (c === chunks - 1) {
        last = chunk;
        break;
      }
      // A full subtree of 2^k chunks merges into one node as soon as it is complete.
      let cv = chainingValue(chunk);
      let total = c + 1;
      while ((total & 1) === 0) {
        cv = chainingValue(parent(stack.pop(), cv, key, flags));
        total /= 2;
      }
      stack.push(cv);
    }
    while (stack.length > 0) last = parent(stack.pop(), chainingValue(last), key, flags);
    const words = compress(last.cv, last.words, 0, last.blockLen, last.flags | ROOT).slice(0, 8);
    const out = new Uint8Array(32);
    const view = new DataView(out.buffer);
    words.forEach((word, i) => view.setUint32(4 * i, word, true));
    return out;
  }

  const toHex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

  return {
    // blake3(input) as lower-case hex.
    hash: (input) => toHex(hashWith(input, IV, 0)),
    // blake3::derive_key(context, material) as lower-case hex.
    deriveKey(context, material) {
      const contextKey = hashWith(new TextEncoder().encode(context), IV, DERIVE_KEY_CONTEXT);
      const view = new DataView(contextKey.buffer);
      const key = Array.from({ length: 8 }, (_, i) => view.getUint32(4 * i, true));
      return toHex(hashWith(material, key, DERIVE_KEY_MATERIAL));
    },
    toHex,
  };
})();
