// The duplicates review: 20 groups a page, one current group, keyboard first.
// Acting (apply, undo, not duplicates) sends the token of this tab as Authorization: Bearer.
const GROUPS_PAGE = 20;
const review = { run: 0, offset: 0, total: 0, groups: [], current: 0, keeper: {}, actions: null };

function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  const u = ["KB", "MB", "GB", "TB"];
  let i = -1;
  do { n /= 1024; i++; } while (n >= 1024 && i < u.length - 1);
  return `${n.toFixed(n < 10 ? 1 : 0)} ${u[i]}`;
}

async function act(path, body) {
  const t = token();
  if (!t) throw new Error("Acting needs the token: open the page URL that lookalike serve printed (…/#token=…).");
  const resp = await fetch(`/api/actions/${path}`, {
    method: "POST", body: JSON.stringify(body),
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${t}` },
  });
  if (!resp.ok) throw new Error(`Error ${resp.status}: ${await apiError(resp)}`);
  return resp.json();
}

async function loadActions() {
  try { review.actions = await (await fetch("/api/actions")).json(); } catch { review.actions = null; }
  const a = review.actions;
  const note = !a ? "" : !a.enabled ? `Actions are off: ${a.reason}.` : !a.move_to ? "Moves are off (start lookalike serve with --move-to DIR)."
    : !token() ? "To act, open the page URL that lookalike serve printed (it carries the token)."
    : `Apply moves the other members of a group to ${a.move_to} (keeping their folders); u undoes the last run.`;
  $("#actions-state").textContent = note;
  $("#apply-all").disabled = !(a && a.enabled && a.move_to && token());
}

async function loadDupes(ev, offset = 0, keepCurrent = false) {
  if (ev) ev.preventDefault();
  const run = ++review.run;
  const msg = $("#dupes-message");
  say(msg, "Looking for duplicates…");
  const t = $("#threshold").value, strict = $("#strict").checked;
  const url = `/api/duplicates?threshold=${encodeURIComponent(t)}&strict=${strict}&offset=${offset}&limit=${GROUPS_PAGE}`;
  let resp;
  for (;;) {
    resp = await fetch(url);
    if (run !== review.run) return;
    if (resp.status !== 202) break;
    const p = await resp.json();  // still computing: show how far, ask again
    const what = p.phase === "verifying" ? "verifying hard copies below the threshold" : p.status;
    say(msg, `Looking for duplicates… ${Math.round(p.progress * 100)}% (${what})`);
    $("#dupes-progress").hidden = false;
    $("#dupes-progress").value = p.progress;
    await new Promise((r) => setTimeout(r, 500));
    if (run !== review.run) return;
  }
  $("#dupes-progress").hidden = true;
  if (!resp.ok) { say(msg, `Error ${resp.status}: ${await apiError(resp)}`, true); return; }
  const data = await resp.json();
  if (!data.groups.length && data.offset > 0 && data.total_groups) { loadDupes(null, Math.max(0, data.total_groups - GROUPS_PAGE)); return; }
  Object.assign(review, { offset: data.offset, total: data.total_groups, groups: data.groups, keeper: {}, threshold: data.threshold, strict: data.strict });
  if (!keepCurrent) review.current = 0;
  review.current = Math.min(review.current, Math.max(0, data.groups.length - 1));
  const shown = data.groups.length ? `Groups ${data.offset + 1}–${data.offset + data.groups.length} of ${data.total_groups.toLocaleString()}` : "";
  const cut = data.truncated ? ` Only the ${data.max_pairs.toLocaleString()} most similar pairs were kept: raise the threshold to see all.` : "";
  const note = data.verify_note ? ` Note: ${data.verify_note}.` : "";
  say(msg, (data.total_groups ? `${shown} at threshold ${data.threshold}; the green one is the keeper.${cut}` : `No duplicates at threshold ${data.threshold}.`) + note);
  render();
}

function memberCard(g, m, n) {
  const div = document.createElement("div");
  const isKeeper = m.id === keeperOf(g);
  div.className = "card member" + (isKeeper ? " keeper" : "") + (m.role === "chained" ? " chained" : "");
  div.dataset.id = m.id;
  div.innerHTML = `<img loading="lazy" alt=""><div class="meta"><div class="score"></div><span class="verified" hidden
    title="Below the threshold, but local features show the same photo as the keeper (a turned, watermarked or cropped copy)">verified</span><div class="name"></div>
    <div class="facts muted"></div><button type="button" class="search-by">search by it</button></div>`;
  div.querySelector("img").src = m.thumb_url;
  div.querySelector(".score").textContent = `${n + 1} · ${isKeeper ? "KEEP" : m.identical ? "identical" : m.score.toFixed(3)}`;
  div.querySelector(".verified").hidden = !(m.verified && keeperOf(g) === g.keeper);
  div.querySelector(".name").textContent = m.name;
  div.querySelector(".name").title = m.path;
  div.querySelector(".facts").textContent = `${fmtBytes(m.size)} · ${m.width}×${m.height} · ${m.modified.slice(0, 10)} · ${m.folder}`;
  div.querySelector(".facts").title = m.folder;
  div.querySelector("img").addEventListener("click", () => openViewer(m));
  div.querySelector(".search-by").addEventListener("click", () => { show("search"); searchById(m); });
  return div;
}

function keeperOf(g) { return review.keeper[g.keeper] ?? g.keeper; }

function render() {
  const box = $("#groups");
  box.innerHTML = "";
  review.groups.forEach((g, n) => {
    const div = document.createElement("div");
    div.className = "group" + (n === review.current ? " current" : "");
    div.dataset.index = n;
    div.innerHTML = `<h3></h3><div class="grid"></div>`;
    const more = g.size > g.members.length ? ` (first ${g.members.length} shown)` : "";
    div.querySelector("h3").textContent = `Group ${review.offset + n + 1}: ${g.size} images${more}, weakest link ${g.min_score.toFixed(3)}`;
    g.members.forEach((m, i) => div.querySelector(".grid").appendChild(memberCard(g, m, i)));
    div.addEventListener("click", () => { review.current = n; markCurrent(false); });
    box.appendChild(div);
  });
  const nav = document.createElement("div");
  nav.className = "pager";
  const button = (text, to) => pagerButton(text, () => { loadDupes(null, to); window.scrollTo({ top: 0 }); });
  if (review.offset > 0) nav.appendChild(button("← previous 20", Math.max(0, review.offset - GROUPS_PAGE)));
  if (review.offset + review.groups.length < review.total) nav.appendChild(button("next 20 →", review.offset + GROUPS_PAGE));
  if (nav.children.length) box.appendChild(nav);
  markCurrent(false);
}

function markCurrent(scroll = true) {
  document.querySelectorAll("#groups .group").forEach((el) => el.classList.toggle("current", Number(el.dataset.index) === review.current));
  const el = document.querySelector(`#groups .group[data-index="${review.current}"]`);
  if (el && scroll) el.scrollIntoView({ block: "nearest" });
}

function move(step) {
  const next = review.current + step;
  if (next >= review.groups.length && review.offset + review.groups.length < review.total) { loadDupes(null, review.offset + GROUPS_PAGE); return; }
  if (next < 0 && review.offset > 0) { review.current = GROUPS_PAGE - 1; loadDupes(null, Math.max(0, review.offset - GROUPS_PAGE), true); return; }
  review.current = Math.max(0, Math.min(review.groups.length - 1, next));
  markCurrent();
}

function currentGroup() { return review.groups[review.current]; }

async function doAct(label, fn) {
  const msg = $("#dupes-message");
  try {
    say(msg, `${label}…`);
    const text = await fn();
    await loadDupes(null, review.offset, true);
    say($("#dupes-message"), text);
  } catch (err) { say(msg, err.message, true); }
}

function applyCurrent() {
  const g = currentGroup();
  if (!g) return;
  const keeper = keeperOf(g);
  const choice = { keeper, act: g.members.map((m) => m.id).filter((id) => id !== keeper) };
  doAct("Moving", async () => {
    const r = await act("apply", { groups: [choice], threshold: review.threshold });
    const skipped = r.skipped.length ? `; ${r.skipped.length} left alone (${r.skipped[0].reason})` : "";
    return `Run ${r.run}: moved ${r.done.length} files (${fmtBytes(r.bytes)})${skipped}. Press u to undo.`;
  });
}

function undoLast() {
  doAct("Undoing", async () => {
    const r = await act("undo", {});
    return `Undone run ${r.run}: ${r.done.length} files back in place.`;
  });
}

function notDuplicates() {
  const g = currentGroup();
  if (!g) return;
  doAct("Remembering", async () => {
    await act("ignore", { ids: g.members.map((m) => m.id) });
    return `Group of ${g.members.length} marked "not duplicates"; it will not be shown again.`;
  });
}

async function applyAll() {
  const msg = $("#dupes-message");
  let plan;
  try { plan = await act("plan", { all: true, threshold: review.threshold, strict: review.strict }); } catch (err) { say(msg, err.message, true); return; }
  const dlg = $("#confirm");
  dlg.querySelector("h3").textContent = `Move ${plan.files.toLocaleString()} files of ${plan.groups.toLocaleString()} groups (${fmtBytes(plan.bytes)}) to ${plan.to}?`;
  const ul = dlg.querySelector("ul");
  ul.innerHTML = "";
  plan.steps.slice(0, 200).forEach((s) => { const li = document.createElement("li"); li.textContent = `${s.path} (${fmtBytes(s.size)})`; ul.appendChild(li); });
  dlg.querySelector("p").textContent = (plan.steps.length > 200 ? `…and ${plan.steps.length - 200} more. ` : "") +
    (plan.left_out.length ? `${plan.left_out.length} files left alone (e.g. ${plan.left_out[0].reason}). ` : "") + "Undo restores them.";
  dlg.showModal();
  const yes = await new Promise((resolve) => {
    $("#confirm-yes").onclick = () => resolve(true);
    $("#confirm-no").onclick = () => resolve(false);
    dlg.onclose = () => resolve(false);
  });
  dlg.close();
  if (!yes) return;
  doAct("Moving", async () => {
    const r = await act("apply", { all: true, threshold: review.threshold, strict: review.strict });
    return `Run ${r.run}: moved ${r.done.length} files (${fmtBytes(r.bytes)}), ${r.skipped.length} left alone. Press u to undo.`;
  });
}

function openViewer(m) {
  const dlg = $("#viewer");
  dlg.querySelector("img").src = m.image_url;
  dlg.querySelector("div").textContent = `${m.path} · ${m.width}×${m.height} · ${fmtBytes(m.size)}`;
  dlg.showModal();
}

function onKey(e) {
  if ($("#view-dupes").hidden || e.ctrlKey || e.metaKey || e.altKey) return;
  if (["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement?.tagName)) return;
  if ($("#viewer").open || $("#confirm").open) return;
  const g = currentGroup();
  if (e.key === "j") move(1);
  else if (e.key === "k") move(-1);
  else if (/^[1-9]$/.test(e.key) && g && g.members[Number(e.key) - 1]) {
    review.keeper[g.keeper] = g.members[Number(e.key) - 1].id;
    const el = document.querySelector(`#groups .group[data-index="${review.current}"]`);
    el.querySelectorAll(".member").forEach((c, i) => {
      const isKeeper = Number(c.dataset.id) === keeperOf(g);
      c.classList.toggle("keeper", isKeeper);
      c.querySelector(".verified").hidden = !(g.members[i].verified && keeperOf(g) === g.keeper);  // checked against the suggested keeper
      c.querySelector(".score").textContent = `${i + 1} · ${isKeeper ? "KEEP" : g.members[i].identical ? "identical" : g.members[i].score.toFixed(3)}`;
    });
  } else if (e.key === "x") notDuplicates();
  else if (e.key === "a") applyCurrent();
  else if (e.key === "u") undoLast();
  else return;
  e.preventDefault();
}

window.dupesOpened = () => {
  loadActions();
  if (!$("#groups").children.length) loadDupes();
};
$("#dupes-form").addEventListener("submit", (e) => loadDupes(e));
$("#apply-all").addEventListener("click", applyAll);
$("#viewer button").addEventListener("click", () => $("#viewer").close());
$("#viewer").addEventListener("click", (e) => { if (e.target === $("#viewer")) $("#viewer").close(); });
document.addEventListener("keydown", onKey);
