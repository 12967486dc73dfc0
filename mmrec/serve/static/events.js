// mmrec web page, the feedback loop: a live "you just viewed" strip fed by the events API.
// Opening or clicking an item (mouse or Enter) posts a `view` event (POST /events) for the chosen
// user; the strip shows the user's recent events (GET /users/{id}/events), newest first, and is
// refreshed after each view and every few seconds (events from other tabs or devices appear too).
// The recommendations are then reloaded: items placed by the real-time fold-in get a badge.
// Same rules as app.js: text through textContent only, ids through encodeURIComponent, and the
// API key travels only as the HttpOnly session cookie (fetch with credentials: same-origin).
"use strict";

(() => {
  const REFRESH_MS = 5000;
  const byId = (id) => document.getElementById(id);
  let lastRecs = null;

  function currentUser() {
    const select = byId("user-select");
    return select && select.value ? select.value : null;
  }

  function newEventId() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") return "web-" + window.crypto.randomUUID();
    return "web-" + Date.now().toString(36) + "-" + Math.random().toString(36).slice(2);
  }

  async function request(path, options = {}) {
    const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
    const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options, { headers }));
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) throw new Error(body && body.detail ? JSON.stringify(body.detail) : response.statusText);
    return body;
  }

  // whether this server has the feedback loop (GET /ready says); unknown (null) until it answers
  let enabled = null;
  async function isEnabled() {
    if (enabled === null) {
      try {
        const ready = await request("/ready");
        enabled = Boolean(ready && ready.features && ready.features.events);
      } catch (err) {
        return false; // not ready yet: ask again next time
      }
      const section = byId("recent");
      if (section) section.hidden = !enabled;
    }
    return enabled;
  }

  function stripCard(item) {
    const node = document.createElement("div");
    node.className = "card recent-card";
    node.tabIndex = 0;
    node.setAttribute("role", "listitem");
    node.dataset.itemId = item.item_id;
    node.setAttribute("aria-label", `${item.title} (${item.event})`);
    if (item.image_url) {
      const img = document.createElement("img");
      img.src = item.image_url;
      img.alt = item.title;
      node.appendChild(img);
    } else {
      const noimg = document.createElement("div");
      noimg.className = "noimg";
      noimg.textContent = "no image";
      node.appendChild(noimg);
    }
    const title = document.createElement("div");
    title.className = "title";
    title.textContent = item.title;
    node.appendChild(title);
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = item.event;
    node.appendChild(meta);
    return node;
  }

  async function refreshStrip() {
    const user = currentUser();
    const strip = byId("recent-strip");
    if (!user || !strip || !(await isEnabled())) return;
    try {
      const body = await request(`/users/${encodeURIComponent(user)}/events?limit=12`);
      if (user !== currentUser()) return; // the user changed while loading
      const focused = document.activeElement && strip.contains(document.activeElement) ? document.activeElement.dataset.itemId : null;
      strip.replaceChildren(...body.items.map(stripCard));
      if (!body.items.length) {
        const empty = document.createElement("p");
        empty.className = "empty";
        empty.textContent = "nothing viewed yet: open an item";
        strip.appendChild(empty);
      }
      strip.dataset.user = user;
      strip.dataset.count = String(body.items.length);
      if (focused) {
        const again = strip.querySelector(`.card[data-item-id="${CSS.escape(focused)}"]`);
        if (again) again.focus();
      }
    } catch (err) {
      strip.dataset.error = err.message;
    }
  }

  async function postView(itemId) {
    const user = currentUser();
    if (!user || !itemId || !(await isEnabled())) return;
    const body = { events: [{ event_id: newEventId(), user_id: user, item_id: itemId, event: "view" }] };
    try {
      await request("/events", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    } catch (err) {
      const box = byId("error");
      if (box) { box.textContent = "view not recorded: " + err.message; box.hidden = false; }
      return;
    }
    await refreshStrip();
    if (typeof window.showUser === "function") await window.showUser(); // recommendations adapt at once
  }

  // Mark the recommendations the real-time fold-in placed (the list is rendered by app.js).
  function markRealtime() {
    const recs = byId("recs");
    if (!recs || !lastRecs) return;
    const realtime = new Set(lastRecs.realtime_item_ids || []);
    for (const node of recs.querySelectorAll(".card")) {
      const live = realtime.has(node.dataset.itemId);
      node.classList.toggle("realtime", live);
      if (live && !node.querySelector(".badge")) {
        const badge = document.createElement("span");
        badge.className = "badge";
        badge.textContent = "real-time";
        node.appendChild(badge);
      }
    }
    const label = byId("recs-source");
    if (label && lastRecs.strategy && !label.textContent.includes("strategy")) {
      label.textContent += ` · strategy ${lastRecs.strategy}` + (realtime.size ? `, ${realtime.size} real-time` : "");
    }
  }

  function hookRecommendations() {
    // app.js's `api` is a global function: wrap it to keep the last recommendations body
    if (typeof window.api !== "function") return;
    const original = window.api;
    window.api = async (path, options) => {
      const body = await original(path, options);
      if (typeof path === "string" && /^\/users\/[^/]+\/recommendations\?/.test(path)) lastRecs = body;
      return body;
    };
    const recs = byId("recs");
    if (recs) new MutationObserver(markRealtime).observe(recs, { childList: true });
  }

  function init() {
    hookRecommendations();
    // a view is opening an item: click or Enter on any item card of the page
    const onOpen = (event) => {
      if (event.type === "keydown" && event.key !== "Enter") return;
      const target = event.target instanceof Element ? event.target.closest(".card") : null;
      if (!target || !target.dataset.itemId || target.closest("#similar-item")) return;
      postView(target.dataset.itemId);
    };
    document.addEventListener("click", onOpen);
    document.addEventListener("keydown", onOpen);
    const strip = byId("recent-strip");
    if (strip) {
      // arrow keys move along the strip (Home/End: first/last)
      strip.addEventListener("keydown", (e) => {
        const cards = Array.from(strip.querySelectorAll(".card"));
        const at = cards.indexOf(document.activeElement);
        if (at < 0) return;
        let next = null;
        if (e.key === "ArrowRight") next = cards[Math.min(at + 1, cards.length - 1)];
        else if (e.key === "ArrowLeft") next = cards[Math.max(at - 1, 0)];
        else if (e.key === "Home") next = cards[0];
        else if (e.key === "End") next = cards[cards.length - 1];
        if (next) { e.preventDefault(); next.focus(); }
      });
    }
    const select = byId("user-select");
    if (select) select.addEventListener("change", refreshStrip);
    const load = byId("load-user");
    if (load) load.addEventListener("click", refreshStrip);
    setInterval(() => { if (document.visibilityState === "visible") refreshStrip(); }, REFRESH_MS);
    setTimeout(refreshStrip, 300); // after app.js picked the first user
    // app.js shows a user (first load, after the key, another user): fill the strip for them now
    document.addEventListener("mmrec:recommendations", () => {
      const shown = byId("recent-strip");
      if (shown && shown.dataset.user !== currentUser()) refreshStrip();
    });
  }

  document.addEventListener("DOMContentLoaded", init, { once: true });
})();
