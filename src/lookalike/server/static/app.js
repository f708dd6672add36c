// lookalike web page: plain JS, no CDN; talks only to this server's /api.
// The URL's fragment holds the query (#id=12&k=20) so a result can be shared and reloaded; a
// #token=... (printed by lookalike serve) is kept for this tab only and removed from the URL.
const $ = (sel) => document.querySelector(sel);
const BROWSE_PAGE = 48;

function say(el, text, isError = false) {
  el.textContent = text;
  el.className = isError ? "error" : "muted";
}

function card(hit, onClick, extra = "") {
  const div = document.createElement("div");
  div.className = "card result" + extra;
  div.dataset.id = hit.id;
  div.innerHTML = `<img loading="lazy" alt="">
    <div class="meta"><div class="score"></div><div class="name"></div></div>`;
  div.querySelector("img").src = hit.thumb_url;
  div.querySelector(".score").textContent = hit.score !== undefined ? `#${hit.rank} · ${hit.score.toFixed(3)}` : "";
  div.querySelector(".name").textContent = hit.name;
  div.querySelector(".name").title = hit.path || hit.name;
  if (onClick) div.addEventListener("click", () => onClick(hit));
  return div;
}

async function apiError(resp) {
  try { return (await resp.json()).detail || resp.statusText; } catch { return resp.statusText; }
}

// ---------------------------------------------------------------- URL state
function pagerButton(text, onClick) {  // "← previous" / "next →" under the browse grid and the duplicate groups
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.addEventListener("click", onClick);
  return b;
}

function hashParams() { return new URLSearchParams(location.hash.slice(1)); }

function setHash(params) {
  const s = params.toString();
  history.replaceState(null, "", s ? `#${s}` : location.pathname + location.search);
}

function takeToken() {  // the token leaves the URL at once (history, screenshots, shared links)
  const p = hashParams();
  if (p.has("token")) {
    sessionStorage.setItem("lookalike-token", p.get("token"));
    p.delete("token");
    setHash(p);
  }
}

function token() { return sessionStorage.getItem("lookalike-token"); }

function k() { return parseInt($("#k").value, 10); }

// ---------------------------------------------------------------- search
function clearResults() {
  $("#query").innerHTML = "";
  $("#results").innerHTML = "";
}

function showBrowse(on) {
  $("#browse").hidden = !on;
  $("#browse-link").hidden = on;
}

async function runSearch(body, headers, queryThumb, queryName, queryPath) {
  const msg = $("#message");
  say(msg, "Searching…");
  const resp = await fetch(`/api/search?k=${k()}`, { method: "POST", body, headers });
  if (!resp.ok) {
    clearResults();  // an error must not sit above the results of an earlier query
    say(msg, `Error ${resp.status}: ${await apiError(resp)}`, true);
    return false;
  }
  const data = await resp.json();
  showBrowse(false);
  $("#query").innerHTML = `<img alt="query"><div><div class="muted">query</div><strong></strong></div>`;
  $("#query img").src = queryThumb;
  $("#query strong").textContent = data.query.name || queryName;
  $("#query strong").title = data.query.path || queryPath || queryName;
  const grid = $("#results");
  grid.innerHTML = "";
  data.results.forEach((h) => grid.appendChild(card(h, searchById)));
  say(msg, `${data.results.length} most similar (${data.method} search)`);
  return true;
}

function searchFile(file) {
  if (!file) return;
  const form = new FormData();
  form.append("image", file);
  const p = hashParams();
  p.delete("id");
  setHash(p);  // an upload cannot be put in a URL
  runSearch(form, {}, URL.createObjectURL(file), file.name);
}

function searchById(hit) {
  const p = hashParams();
  p.set("id", hit.id);
  p.set("k", k());
  setHash(p);
  runSearch(JSON.stringify({ id: hit.id, k: k() }), { "Content-Type": "application/json" }, hit.thumb_url || `/api/thumbs/${hit.id}`,
            hit.name || `image ${hit.id}`, hit.path);
  window.scrollTo({ top: 0, behavior: "smooth" });
}

// ---------------------------------------------------------------- browse
async function browse(offset = 0) {
  const resp = await fetch(`/api/images?offset=${offset}&limit=${BROWSE_PAGE}`);
  if (!resp.ok) { say($("#message"), `Error ${resp.status}: ${await apiError(resp)}`, true); return; }
  const data = await resp.json();
  const grid = $("#browse-grid");
  grid.innerHTML = "";
  data.images.forEach((im) => grid.appendChild(card(im, searchById)));
  const pager = $("#browse-pager");
  pager.innerHTML = "";
  const info = document.createElement("span");
  info.className = "muted";
  info.textContent = data.total ? `images ${offset + 1}–${offset + data.images.length} of ${data.total.toLocaleString()}` : "";
  const button = (text, to) => pagerButton(text, () => browse(to));
  if (offset > 0) pager.appendChild(button("← previous", Math.max(0, offset - BROWSE_PAGE)));
  pager.appendChild(info);
  if (offset + data.images.length < data.total) pager.appendChild(button("next →", offset + BROWSE_PAGE));
}

function backToBrowse() {
  clearResults();
  say($("#message"), "");
  const p = hashParams();
  p.delete("id");
  setHash(p);
  showBrowse(true);
}

function fromHash() {  // reload or a shared link: search again by the id in the URL
  const p = hashParams();
  if (p.has("k") && [...$("#k").options].some((o) => o.value === p.get("k"))) $("#k").value = p.get("k");
  const id = parseInt(p.get("id"), 10);
  if (Number.isInteger(id) && id >= 0) searchById({ id });
}

// ---------------------------------------------------------------- views
function show(view) {
  document.querySelectorAll(".tab").forEach((b) => b.classList.toggle("active", b.dataset.view === view));
  $("#view-search").hidden = view !== "search";
  $("#view-dupes").hidden = view !== "dupes";
}

async function init() {
  takeToken();
  document.querySelectorAll(".tab").forEach((b) => b.addEventListener("click", () => {
    show(b.dataset.view);
    if (b.dataset.view === "dupes") window.dupesOpened();
  }));
  $("#file").addEventListener("change", (e) => searchFile(e.target.files[0]));
  $("#k").addEventListener("change", () => {
    const p = hashParams();
    p.set("k", k());
    setHash(p);
    if (p.has("id")) fromHash();  // the shown query, again with the new k
  });
  $("#browse-link").addEventListener("click", backToBrowse);
  const drop = $("#drop");
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
  drop.addEventListener("drop", (e) => searchFile(e.dataTransfer.files[0]));
  try {
    const s = await (await fetch("/api/stats")).json();
    $("#stats").innerHTML = "<span></span><span></span><span></span>";
    const parts = [`${s.images.toLocaleString()} images`, s.encoder, `${s.search_method} search`];
    $("#stats").querySelectorAll("span").forEach((el, i) => { el.textContent = parts[i]; });
    if (s.dupes_threshold) $("#threshold").value = s.dupes_threshold;
    if (!s.images) say($("#message"), "This collection is empty: index a folder first (lookalike index FOLDER --db …).", true);
  } catch { say($("#message"), "Cannot reach the lookalike server."); }
  browse(0);
  fromHash();
}
init();
