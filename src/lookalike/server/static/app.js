// lookalike web page: plain JS, no CDN; talks only to this server's /api.
const $ = (sel) => document.querySelector(sel);

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
  div.querySelector(".score").textContent = hit.score !== undefined ? `#${hit.rank} · ${hit.score.toFixed(3)}` : (hit.keeper ? "keep" : "");
  div.querySelector(".name").textContent = hit.name;
  div.querySelector(".name").title = hit.path || hit.name;
  if (onClick) div.addEventListener("click", () => onClick(hit));
  return div;
}

async function apiError(resp) {
  try { return (await resp.json()).detail || resp.statusText; } catch { return resp.statusText; }
}

async function runSearch(body, headers, queryThumb, queryName) {
  const msg = $("#message");
  say(msg, "Searching…");
  const resp = await fetch("/api/search?k=12", { method: "POST", body, headers });
  if (!resp.ok) { say(msg, `Error ${resp.status}: ${await apiError(resp)}`, true); return; }
  const data = await resp.json();
  $("#query").innerHTML = `<img alt="query"><div><div class="muted">query</div><strong></strong></div>`;
  $("#query img").src = queryThumb;
  $("#query strong").textContent = queryName;
  const grid = $("#results");
  grid.innerHTML = "";
  data.results.forEach((h) => grid.appendChild(card(h, searchById)));
  say(msg, `${data.results.length} most similar (${data.method} search)`);
}

function searchFile(file) {
  if (!file) return;
  const form = new FormData();
  form.append("image", file);
  runSearch(form, {}, URL.createObjectURL(file), file.name);
}

function searchById(hit) {
  runSearch(JSON.stringify({ id: hit.id, k: 12 }), { "Content-Type": "application/json" }, hit.thumb_url, hit.name);
  window.scrollTo({ top: 0, behavior: "smooth" });
}

const DUPES_PAGE = 50;
let dupesRun = 0;  // a newer request stops the polling of an older one

async function loadDupes(ev, offset = 0) {
  if (ev) ev.preventDefault();
  const run = ++dupesRun;
  const msg = $("#dupes-message");
  say(msg, "Looking for duplicates…");
  const t = $("#threshold").value, strict = $("#strict").checked;
  const url = `/api/duplicates?threshold=${encodeURIComponent(t)}&strict=${strict}&offset=${offset}&limit=${DUPES_PAGE}`;
  let resp;
  for (;;) {
    resp = await fetch(url);
    if (run !== dupesRun) return;
    if (resp.status !== 202) break;
    const p = await resp.json();  // still computing: show how far, ask again
    say(msg, `Looking for duplicates… ${Math.round(p.progress * 100)}% (${p.status})`);
    $("#dupes-progress").hidden = false;
    $("#dupes-progress").value = p.progress;
    await new Promise((r) => setTimeout(r, 700));
    if (run !== dupesRun) return;
  }
  $("#dupes-progress").hidden = true;
  if (!resp.ok) { say(msg, `Error ${resp.status}: ${await apiError(resp)}`, true); return; }
  const data = await resp.json();
  const box = $("#groups");
  box.innerHTML = "";
  const shown = data.groups.length ? `groups ${data.offset + 1}–${data.offset + data.groups.length} of ${data.total_groups}` : "";
  const cut = data.truncated ? ` Only the ${data.max_pairs.toLocaleString()} most similar pairs were kept: raise the threshold to see all.` : "";
  say(msg, data.total_groups ? `${shown} at threshold ${data.threshold}; the green one is the suggested keeper (most pixels, then oldest). Nothing is deleted.${cut}`
                             : `No duplicates at threshold ${data.threshold}.`);
  data.groups.forEach((g, n) => {
    const div = document.createElement("div");
    div.className = "group";
    div.innerHTML = `<h3></h3><div class="grid"></div>`;
    const more = g.size > g.members.length ? ` (first ${g.members.length} shown)` : "";
    div.querySelector("h3").textContent = `Group ${data.offset + n + 1}: ${g.size} images${more}, weakest link ${g.min_score.toFixed(3)}`;
    g.members.forEach((m) => div.querySelector(".grid").appendChild(card(m, searchByIdFromDupes, m.keeper ? " keeper" : "")));
    box.appendChild(div);
  });
  const nav = document.createElement("div");
  nav.className = "pager";
  if (data.offset > 0) nav.appendChild(pageButton("← previous", Math.max(0, data.offset - DUPES_PAGE)));
  if (data.offset + data.groups.length < data.total_groups) nav.appendChild(pageButton("next →", data.offset + DUPES_PAGE));
  if (nav.children.length) box.appendChild(nav);
}

function pageButton(text, offset) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.addEventListener("click", () => { loadDupes(null, offset); window.scrollTo({ top: 0 }); });
  return b;
}

function searchByIdFromDupes(m) { show("search"); searchById(m); }

function show(view) {
  document.querySelectorAll(".tab").forEach((b) => b.classList.toggle("active", b.dataset.view === view));
  $("#view-search").hidden = view !== "search";
  $("#view-dupes").hidden = view !== "dupes";
}

async function init() {
  document.querySelectorAll(".tab").forEach((b) => b.addEventListener("click", () => {
    show(b.dataset.view);
    if (b.dataset.view === "dupes" && !$("#groups").children.length) loadDupes();
  }));
  $("#file").addEventListener("change", (e) => searchFile(e.target.files[0]));
  const drop = $("#drop");
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
  drop.addEventListener("drop", (e) => searchFile(e.dataTransfer.files[0]));
  $("#dupes-form").addEventListener("submit", loadDupes);
  try {
    const s = await (await fetch("/api/stats")).json();
    $("#stats").textContent = `${s.images.toLocaleString()} images · ${s.encoder} · ${s.search_method} search`;
    if (!s.images) say($("#message"), "This collection is empty: index a folder first (lookalike index FOLDER --db …).", true);
  } catch { say($("#message"), "Cannot reach the lookalike server.", true); }
}
init();
