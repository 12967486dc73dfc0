// mmrec web page: pick a user, see history and recommendations, click an item for similar items.
// Plain DOM code, no build step. Everything shown comes from the JSON API of this server; text is
// always inserted with textContent (never innerHTML), so item titles cannot inject markup.
// Ids go into paths through encodeURIComponent (the server decodes one segment per id), and
// the API key is never kept by the page: it is traded once for an HttpOnly session cookie
// (POST /session) that no script can read and that authenticates fetch and <img> alike.
"use strict";

const state = { modalities: [], item: null, modality: "fused", user: null };
const $ = (id) => document.getElementById(id);
const seg = encodeURIComponent;

async function api(path, options = {}) {
  const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
  const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options, { headers }));
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (response.status === 401) {
    $("key-form").hidden = false;
    throw new Error("this server needs an API key");
  }
  if (!response.ok) {
    const detail = body && body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)) : response.statusText;
    throw new Error(detail);
  }
  return body;
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "dataset") Object.assign(node.dataset, v); else node.setAttribute(k, v);
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

function card(item, extra) {
  const node = el("div", { class: "card", tabindex: "0", role: "button", dataset: { itemId: item.item_id } });
  if (item.image_url) {
    node.appendChild(el("img", { src: item.image_url, alt: item.title, loading: "lazy" }));
  } else {
    node.appendChild(el("div", { class: "noimg" }, "no image"));
  }
  node.appendChild(el("div", { class: "title" }, item.title));
  if (extra) node.appendChild(el("div", { class: "meta" }, extra));
  node.addEventListener("click", () => openSimilar(item));
  node.addEventListener("keydown", (e) => { if (e.key === "Enter") openSimilar(item); });
  return node;
}

function fill(container, items, extra) {
  container.replaceChildren();
  if (!items.length) { container.appendChild(el("p", { class: "empty" }, "nothing to show")); return; }
  for (const item of items) container.appendChild(card(item, extra ? extra(item) : undefined));
}

async function loadUsers() {
  const prefix = $("user-filter").value.trim();
  const query = new URLSearchParams({ limit: "200" });
  if (prefix) query.set("prefix", prefix);
  const body = await api("/users?" + query);
  const select = $("user-select");
  select.replaceChildren();
  for (const u of body.users) {
    select.appendChild(el("option", { value: u.user_id }, `${u.user_id} (${u.interactions} interactions)`));
  }
  return body.users;
}

async function showUser() {
  const user = $("user-select").value;
  if (!user) return;
  state.user = user;
  showError("");
  const k = Math.max(1, Math.min(100, parseInt($("k").value, 10) || 10));
  try {
    const [history, recs] = await Promise.all([
      api(`/users/${seg(user)}/history?limit=20`),
      api(`/users/${seg(user)}/recommendations?k=${k}`),
    ]);
    $("history-count").textContent = `(${history.total} interactions, newest first)`;
    fill($("history"), history.items);
    $("recs-source").textContent = `(${recs.source}, model version ${recs.version})`;
    fill($("recs"), recs.items, (i) => `#${i.rank} · score ${i.score.toFixed(3)}`);
    $("recs").dataset.user = user;
    // other scripts add to the cards (why.js: the "Why?" panels)
    document.dispatchEvent(new CustomEvent("mmrec:recommendations", { detail: { user, container: $("recs"), items: recs.items } }));
  } catch (err) { showError(err.message); }
}

async function openSimilar(item) {
  state.item = item;
  $("similar-panel").hidden = false;
  $("similar-title").textContent = item.title;
  const self = card(item);
  $("similar-item").replaceChildren(self);
  if (state.user && $("recs").contains(document.querySelector(`#recs .card[data-item-id="${CSS.escape(item.item_id)}"]`))) {
    const why = el("button", { type: "button", id: "why" }, "Why recommended?");
    why.addEventListener("click", (e) => { e.stopPropagation(); explain(state.user, item.item_id); });
    why.addEventListener("keydown", (e) => e.stopPropagation());  // Enter on the button is not Enter on the card
    self.appendChild(why);
  }
  $("explain").hidden = true;
  renderTabs();
  await loadSimilar();
}

function renderTabs() {
  const nav = $("modalities");
  nav.replaceChildren();
  for (const m of state.modalities) {
    const tab = el("button", { type: "button", class: "modality-tab" + (m === state.modality ? " active" : ""), dataset: { modality: m } }, m);
    tab.addEventListener("click", () => { state.modality = m; renderTabs(); loadSimilar(); });
    nav.appendChild(tab);
  }
}

async function loadSimilar() {
  const box = $("similar");
  box.replaceChildren(el("p", { class: "empty" }, "loading…"));
  box.dataset.modality = state.modality;
  try {
    const body = await api(`/items/${seg(state.item.item_id)}/similar?k=8&modality=${seg(state.modality)}`);
    fill(box, body.items, (i) => `similarity ${i.similarity.toFixed(3)}`);
  } catch (err) {
    box.replaceChildren(el("p", { class: "empty" }, err.message));
  }
  box.dataset.loaded = state.item.item_id + ":" + state.modality;
}

async function explain(user, itemId) {
  const box = $("explain");
  box.hidden = false;
  await WHY.render(box, user, itemId);  // why.js: the same chart and supporting items as the "Why?" panels
}

function init() {
  $("key-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = $("api-key");
    // traded for the server's HttpOnly session cookie, then forgotten (the field is cleared)
    const response = await fetch("/session", { method: "POST", credentials: "same-origin", headers: { "X-API-Key": input.value } });
    input.value = "";
    if (!response.ok) { showError("wrong API key"); return; }
    showError("");
    $("key-form").hidden = true;
    await load();
  });
  $("load-user").addEventListener("click", showUser);
  $("user-select").addEventListener("change", showUser);
  $("user-filter").addEventListener("input", () => loadUsers().catch((err) => showError(err.message)));
  $("close-similar").addEventListener("click", () => { $("similar-panel").hidden = true; });
  return load();
}

async function load() {
  try {
    const ready = await api("/ready");
    state.modalities = (ready.modalities || []).slice().sort((a, b) => (a === "fused" ? -1 : b === "fused" ? 1 : a.localeCompare(b)));
    if (!state.modalities.includes(state.modality)) state.modality = state.modalities[0] || "fused";
    $("status").textContent = `model ${ready.model || "?"} v${ready.version} · ${ready.items} items · ${ready.users} users`;
    const users = await loadUsers();
    if (users.length) await showUser();
  } catch (err) { showError(err.message); $("status").textContent = "not ready"; }
}

document.addEventListener("DOMContentLoaded", init, { once: true });
