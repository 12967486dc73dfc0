// The models page: the registry's versions and aliases, the champion's metrics, the last nightly
// run and the evaluation report's figures, from GET /models/overview (mmrec/serve/overview.py).
// Plain DOM code, text inserted with textContent only. As on the main page, an API key is traded
// once for the HttpOnly session cookie (POST /session), which also authenticates the figures' <img>.
"use strict";

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function showError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

function notice(id, message) {
  $(id).textContent = message || "";
  $(id).hidden = !message;
}

const num = (v, digits = 4) => (v === null || v === undefined || Number.isNaN(Number(v)) ? "–" : Number(v).toFixed(digits));

async function fetchOverview() {
  const response = await fetch("/models/overview", { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (response.status === 401) {
    $("key-form").hidden = false;
    $("api-key").focus();
    throw new Error("this server needs an API key");
  }
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) throw new Error(body && typeof body.detail === "string" ? body.detail : response.statusText);
  return body;
}

// "2026-12-06T21:26:54Z" -> "2026-12-06 21:26 UTC"
const when = (iso) => (iso ? iso.replace("T", " ").replace(/:\d\dZ$/, " UTC") : "–");

function badge(alias) {
  return el("span", { class: `badge ${alias}` }, alias);
}

function renderRegistry(reg) {
  const table = $("versions");
  const tbody = table.querySelector("tbody");
  tbody.replaceChildren();
  $("aliases").replaceChildren();
  $("registry-name").textContent = reg.registered_model ? `(${reg.registered_model})` : "";
  if (reg.status !== "ok") {
    notice("registry-message", reg.message);
    table.hidden = true;
    return;
  }
  notice("registry-message", reg.versions.length ? "" : "The registered model has no versions yet.");
  for (const [alias, version] of Object.entries(reg.aliases).sort()) {
    const li = el("li", { "data-alias": alias });
    li.append(badge(alias), document.createTextNode(` v${version}`));
    $("aliases").appendChild(li);
  }
  $("versions-metric").textContent = `valid ${reg.metric}`;
  for (const v of reg.versions) {
    const row = el("tr", { "data-version": v.version });
    if (v.aliases.includes("champion")) row.classList.add("is-champion");
    const aliases = el("td");
    for (const a of v.aliases) aliases.appendChild(badge(a));
    row.append(el("td", {}, `v${v.version}`), aliases, el("td", {}, v.model || "–"), el("td", { class: "num" }, num(v.metric)),
               el("td", {}, v.decision || "–"), el("td", {}, when(v.created)));
    tbody.appendChild(row);
  }
  table.hidden = !reg.versions.length;
}

// rows: metrics (recall@10, ...); columns: the evaluation parts the champion's run logged
function renderChampion(reg, report) {
  const table = $("metrics");
  const champion = reg.status === "ok" ? reg.champion : null;
  if (!champion) {
    const why = reg.status !== "ok" ? reg.message : "No version has the champion alias yet: run `mmrec promote`.";
    notice("champion-message", why);
    $("champion-name").textContent = "";
    table.hidden = true;
    return;
  }
  $("champion-name").textContent = `(v${champion.version}, ${champion.model || "?"}${champion.trained ? ", trained " + when(champion.trained) : ""})`;
  let metrics = champion.metrics || {};
  let note = "";
  if (!Object.keys(metrics).some((p) => p !== "training") && report.status === "ok" && report.models[champion.model]) {
    metrics = report.models[champion.model];  // a run without logged metrics: the report's figures for that model
    note = "From the evaluation report (the champion's run logged no metrics).";
  }
  const parts = ["valid", "test", "sparse", "cold"].filter((p) => metrics[p]);
  // ranking metrics (name@k) and the user count; other bookkeeping of a part (tied_users, ...) is left out
  const names = [...new Set(parts.flatMap((p) => Object.keys(metrics[p])))].filter((m) => /@\d+$/.test(m) || m === "users").sort((a, b) => {
    const [ma, ka] = a.split("@"), [mb, kb] = b.split("@");
    return ma.localeCompare(mb) || Number(ka) - Number(kb);
  });
  notice("champion-message", parts.length ? note : "The champion's run has no evaluation metrics.");
  const head = el("tr");
  head.appendChild(el("th", { scope: "col" }, "metric"));
  for (const p of parts) head.appendChild(el("th", { scope: "col" }, p));
  table.querySelector("thead").replaceChildren(head);
  const tbody = table.querySelector("tbody");
  tbody.replaceChildren();
  for (const name of names) {
    const row = el("tr", { "data-metric": name });
    row.appendChild(el("th", { scope: "row" }, name));
    for (const p of parts) row.appendChild(el("td", { class: "num" }, num(metrics[p][name], name === "users" ? 0 : 4)));
    tbody.appendChild(row);
  }
  table.hidden = !parts.length;
}

function renderNightly(n) {
  const dl = $("nightly-facts");
  dl.replaceChildren();
  if (n.status !== "ok") {
    notice("nightly-message", n.message);
    dl.hidden = true;
    return;
  }
  notice("nightly-message", "");
  const model = n.model || {};
  const facts = [
    ["finished", when(n.finished_at)],
    ["users", n.users_covered !== null && n.users_covered !== undefined ? `${n.users_covered} of ${n.users}` : `${n.users}`],
    ["catalogue coverage", n.catalogue_coverage !== null && n.catalogue_coverage !== undefined
      ? `${(100 * n.catalogue_coverage).toFixed(1)}% (${n.items_recommended} of ${n.n_items} items)` : "–"],
    ["top-K", `${n.k}${n.strategy && n.strategy !== "model" ? " (" + n.strategy + ")" : ""}`],
    ["model", `${model.name || "?"}${model.version ? " v" + model.version : ""}${model.alias ? " (" + model.alias + ")" : ""}`],
    ["took", n.seconds !== null && n.seconds !== undefined ? `${Number(n.seconds).toFixed(1)} s` : "–"],
  ];
  for (const [k, v] of facts) {
    dl.append(el("dt", {}, k), el("dd", { "data-fact": k }, v));
  }
  dl.hidden = false;
}

function renderReport(report, figures) {
  const box = $("figures");
  box.replaceChildren();
  if (report.status === "ok") {
    const split = report.split ? `split ${report.split.kind || "?"} ${String(report.split.hash || "").slice(0, 8)}` : "";
    $("report-note").textContent = `(best model ${report.best_model || "?"} on ${report.selection_metric || "?"}${split ? ", " + split : ""})`;
  } else {
    $("report-note").textContent = "";
  }
  notice("report-message", figures.length ? "" : (report.status === "ok" ? "The report has no figures." : report.message));
  for (const f of figures) {
    const fig = el("figure", { "data-figure": f.name });
    fig.append(el("img", { src: f.url, alt: f.title, loading: "lazy" }), el("figcaption", {}, f.title));
    box.appendChild(fig);
  }
}

async function load() {
  try {
    const body = await fetchOverview();
    showError("");
    $("status").textContent = body.dataset ? `dataset ${body.dataset}` : "no dataset";
    if (body.registry.read_at) $("status").textContent += ` · registry read ${when(body.registry.read_at)}`;
    renderRegistry(body.registry);
    renderChampion(body.registry, body.report);
    renderNightly(body.nightly);
    renderReport(body.report, body.figures);
    document.body.dataset.loaded = "true";
  } catch (err) {
    showError(err.message);
    $("status").textContent = "not loaded";
  }
}

function init() {
  $("key-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = $("api-key");
    const response = await fetch("/session", { method: "POST", credentials: "same-origin", headers: { "X-API-Key": input.value } });
    input.value = "";
    if (!response.ok) { showError("wrong API key"); return; }
    $("key-form").hidden = true;
    await load();
  });
  return load();
}

document.addEventListener("DOMContentLoaded", init, { once: true });
