// mmrec page: the search box (GET /search for text, POST /search with an image file).
// Self-contained beside app.js: same rules (textContent only, same-origin cookie for the API key).
// Keyboard: type and press Enter; ArrowDown moves from the box into the results, ArrowUp/Down
// between them, Escape back to the box; every result is a focusable element.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  function node(tag, attrs = {}, text) {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    return n;
  }

  async function call(url, options = {}) {
    const response = await fetch(url, Object.assign({ credentials: "same-origin" }, options));
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (response.status === 401) {
      $("key-form").hidden = false;
      throw new Error("this server needs an API key");
    }
    if (!response.ok) {
      const d = body && body.detail;
      throw new Error(d ? (typeof d === "string" ? d : JSON.stringify(d)) : response.statusText);
    }
    return body;
  }

  function render(body) {
    const list = $("search-results");
    list.replaceChildren();
    const model = body.model || {};
    $("search-status").textContent = `${body.items.length} items · ${model.name || "?"} v${model.version || "?"} · matched by ${body.target}`;
    if (!body.items.length) { list.appendChild(node("li", { class: "empty" }, "no match")); return; }
    for (const item of body.items) {
      const li = node("li", { class: "card search-hit", tabindex: "0", "data-item-id": item.item_id });
      if (item.image_url) li.appendChild(node("img", { src: item.image_url, alt: item.title || item.item_id, loading: "lazy" }));
      else li.appendChild(node("div", { class: "noimg" }, "no image"));
      li.appendChild(node("div", { class: "title" }, item.title || item.item_id));
      const parts = Object.entries(item.matched).map(([m, v]) => `${m} ${v.toFixed(2)}`).join(" · ");
      li.appendChild(node("div", { class: "meta" }, `#${item.rank} · ${parts}`));
      list.appendChild(li);
    }
  }

  async function run(event) {
    if (event) event.preventDefault();
    const q = $("search-q").value.trim();
    const file = $("search-image").files[0];
    const params = new URLSearchParams({ k: $("k") ? $("k").value || "10" : "10", target: $("search-target").value });
    $("search-error").hidden = true;
    $("search-status").textContent = "searching…";
    try {
      let body;
      if (file) {
        body = await call("/search?" + params, { method: "POST", headers: { "Content-Type": file.type || "application/octet-stream" }, body: file });
      } else {
        if (!q) throw new Error("type something to search for, or choose an image");
        params.set("q", q);
        body = await call("/search?" + params);
      }
      render(body);
    } catch (err) {
      $("search-status").textContent = "";
      $("search-error").textContent = err.message;
      $("search-error").hidden = false;
    }
  }

  function keys(e) {
    const hits = [...document.querySelectorAll("#search-results .search-hit")];
    const at = hits.indexOf(document.activeElement);
    if (e.key === "ArrowDown" && hits.length) {
      e.preventDefault();
      hits[Math.min(at + 1, hits.length - 1)].focus();
    } else if (e.key === "ArrowUp" && at >= 0) {
      e.preventDefault();
      if (at === 0) $("search-q").focus(); else hits[at - 1].focus();
    } else if (e.key === "Escape") {
      $("search-q").focus();
    }
  }

  function init() {
    $("search-form").addEventListener("submit", run);
    $("search-form").addEventListener("keydown", keys);
    $("search-results").addEventListener("keydown", keys);
    $("search-image").addEventListener("change", () => { if ($("search-image").files.length) run(); });
    $("search-clear").addEventListener("click", () => {
      $("search-image").value = ""; $("search-q").value = ""; $("search-results").replaceChildren();
      $("search-status").textContent = ""; $("search-q").focus();
    });
  }

  document.addEventListener("DOMContentLoaded", init, { once: true });
})();
