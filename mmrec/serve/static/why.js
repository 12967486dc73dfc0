// "Why?" panels of the recommendations: the explanation's per-source contributions as a bar
// chart (plain SVG, no library) and the user's past items behind the recommendation.
//
// app.js announces each rendered list with a `mmrec:recommendations` event ({user, container});
// this file then gives every recommendation card a disclosure button (aria-expanded,
// aria-controls) that opens a panel below the card's row. The explanation is fetched on first
// open (GET /users/{u}/recommendations/{i}/explain, through app.js's `api`, which carries the
// session cookie and shows the key form on 401) and kept for the panel's life. Escape inside an
// open panel closes it and returns focus to its button. All text goes in with textContent.
// The chart has a text alternative: role="img" with <title>/<desc>, and a table of the values
// for screen readers. Colours are SVG presentation attributes (the page's CSP forbids inline styles).
"use strict";

const WHY = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  // a fixed colour per source, so the same source looks the same in every panel
  const COLOURS = { collaborative: "#2563eb", text: "#059669", image: "#d97706", audio: "#7c3aed",
                    video: "#dc2626", popularity: "#6b7280", content: "#0d9488" };
  const ORDER = ["collaborative", "text", "image", "audio", "video", "content", "popularity"];
  let counter = 0;

  function node(tag, attrs = {}, text) {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    return n;
  }

  function svg(tag, attrs = {}, text) {
    const n = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
    if (text !== undefined) n.textContent = text;
    return n;
  }

  const fmt = (v) => (v >= 0 ? "+" : "−") + Math.abs(v).toFixed(3);

  function ordered(contributions) {
    const parts = Object.entries(contributions).map(([k, v]) => [k, Number(v)]);
    const rank = (k) => (ORDER.includes(k) ? ORDER.indexOf(k) : ORDER.length);
    return parts.sort((a, b) => rank(a[0]) - rank(b[0]) || a[0].localeCompare(b[0]));
  }

  // Horizontal bars from a zero line: positive parts to the right, negative to the left, each
  // scaled by the largest |part| so the chart reads the same whatever the score's scale.
  function chart(body, id) {
    const parts = ordered(body.contributions || {});
    const width = 320, label = 92, value = 58, row = 22, pad = 4;
    const plot = width - label - value;
    const max = Math.max(1e-12, ...parts.map(([, v]) => Math.abs(v)));
    const hasNeg = parts.some(([, v]) => v < 0);
    const zero = label + (hasNeg ? plot / 2 : 0);
    const scale = (hasNeg ? plot / 2 : plot) / max;
    const height = parts.length * row + pad * 2;
    const summary = `score ${Number(body.score).toFixed(3)} = ` + parts.map(([k, v]) => `${k} ${fmt(v)}`).join(", ");
    const root = svg("svg", { class: "why-chart", viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
                              "aria-labelledby": `${id}-title ${id}-desc` });
    root.appendChild(svg("title", { id: `${id}-title` }, "Score contributions by source"));
    root.appendChild(svg("desc", { id: `${id}-desc` }, summary));
    parts.forEach(([part, v], i) => {
      const y = pad + i * row;
      const w = Math.max(1, Math.abs(v) * scale);
      root.appendChild(svg("text", { x: label - 6, y: y + row / 2 + 4, "text-anchor": "end", class: "why-label" }, part));
      root.appendChild(svg("rect", { class: "bar", x: v >= 0 ? zero : zero - w, y: y + 4, width: w.toFixed(2), height: row - 8,
                                     rx: 2, fill: COLOURS[part] || "#9ca3af", "data-part": part, "data-value": v }));
      root.appendChild(svg("text", { x: width - 2, y: y + row / 2 + 4, "text-anchor": "end", class: "why-value" }, fmt(v)));
    });
    root.appendChild(svg("line", { x1: zero, x2: zero, y1: 0, y2: height, stroke: "#374151", "stroke-width": 1 }));
    return root;
  }

  function table(body) {
    const t = node("table", { class: "sr-only" });
    t.appendChild(node("caption", {}, "Score contributions by source"));
    const head = node("tr");
    head.append(node("th", { scope: "col" }, "source"), node("th", { scope: "col" }, "contribution"),
                node("th", { scope: "col" }, "share"));
    t.appendChild(head);
    for (const [part, v] of ordered(body.contributions || {})) {
      const r = node("tr");
      const share = body.shares && body.shares[part] !== undefined ? `${Math.round(body.shares[part] * 100)}%` : "";
      r.append(node("th", { scope: "row" }, part), node("td", {}, fmt(v)), node("td", {}, share));
      t.appendChild(r);
    }
    return t;
  }

  function supporting(body) {
    const items = body.supporting_items || [];
    const box = node("div", { class: "why-support" });
    if (!items.length) {
      box.appendChild(node("p", { class: "empty" }, "No single past item stands behind this one (the model scores it from the whole history)."));
      return box;
    }
    box.appendChild(node("h4", {}, "Because you interacted with"));
    const list = node("ul", { class: "why-items" });
    for (const s of items) {
      const li = node("li", { class: "why-item", "data-item-id": s.item_id });
      if (s.image_url) li.appendChild(node("img", { src: s.image_url, alt: s.title || s.item_id, loading: "lazy" }));
      else li.appendChild(node("div", { class: "noimg", "aria-hidden": "true" }, "no image"));
      li.appendChild(node("span", { class: "title" }, s.title || s.item_id));
      if (s.affinity !== undefined && s.affinity !== null) {
        li.appendChild(node("span", { class: "meta" }, `affinity ${Number(s.affinity).toFixed(3)}`));
      }
      list.appendChild(li);
    }
    box.appendChild(list);
    return box;
  }

  // The explanation rendered into `box` (also used by app.js's explain() in the similar panel).
  async function render(box, user, itemId) {
    box.replaceChildren(node("p", { class: "empty" }, "explaining…"));
    box.setAttribute("aria-busy", "true");
    try {
      const body = await api(`/users/${encodeURIComponent(user)}/recommendations/${encodeURIComponent(itemId)}/explain`);
      const id = `why-chart-${++counter}`;
      const rank = body.rank ? `, rank ${body.rank}` : "";
      const figure = node("div", { class: "why-figure" });
      figure.append(chart(body, id), table(body));
      const columns = node("div", { class: "why-columns" });
      columns.append(figure, supporting(body));
      box.replaceChildren(
        node("p", { class: "why-score" }, `${body.model || "model"} v${body.version}: score ${Number(body.score).toFixed(3)}${rank}`),
        columns);
      box.dataset.loaded = "true";
    } catch (err) {
      box.replaceChildren(node("p", { class: "error" }, err.message));
    } finally {
      box.removeAttribute("aria-busy");
    }
  }

  function toggle(button, panel, user, itemId) {
    const open = button.getAttribute("aria-expanded") !== "true";
    button.setAttribute("aria-expanded", String(open));
    panel.hidden = !open;
    const body = panel.querySelector(".why-body");
    if (open && body.dataset.loaded !== "true" && body.getAttribute("aria-busy") !== "true") render(body, user, itemId);
  }

  // Each card of `container` (a grid) gets a "Why?" button; its panel is the next grid cell and
  // spans the whole row, so it opens below the card's row.
  function attach(container, user) {
    for (const card of [...container.querySelectorAll(":scope > .card")]) {
      const itemId = card.dataset.itemId;
      const title = card.querySelector(".title") ? card.querySelector(".title").textContent : itemId;
      const pid = `why-panel-${++counter}`;
      const cell = node("div", { class: "rec-cell" });
      card.replaceWith(cell);
      const button = node("button", { type: "button", class: "why-toggle", "aria-expanded": "false", "aria-controls": pid,
                                      "data-item-id": itemId }, "Why?");
      button.setAttribute("aria-label", `Why is ${title} recommended?`);
      cell.append(card, button);
      const panel = node("section", { id: pid, class: "why-panel", "aria-label": `Why ${title} is recommended`, "data-item-id": itemId });
      panel.hidden = true;
      const close = node("button", { type: "button", class: "why-close", "aria-label": "close" }, "×");
      panel.append(close, node("h3", {}, `Why “${title}”?`), node("div", { class: "why-body", "aria-live": "polite" }));
      cell.after(panel);
      button.addEventListener("click", () => toggle(button, panel, user, itemId));
      close.addEventListener("click", () => { toggle(button, panel, user, itemId); button.focus(); });
      panel.addEventListener("keydown", (e) => {
        if (e.key === "Escape") { e.stopPropagation(); toggle(button, panel, user, itemId); button.focus(); }
      });
    }
  }

  document.addEventListener("mmrec:recommendations", (e) => attach(e.detail.container, e.detail.user));
  return { attach, render, chart };
})();
