// The MINT-Demo page: pick an audit, add images with their classes, send them, read the answer.
// Plain DOM: every text from the server or from file names goes in through textContent, never as HTML.
// No image gets a class by default: each needs the person's choice, a class or the model's prediction
// (PREDICTED), before the check can be sent.
"use strict";

const PREDICTED = "predicted";  // the label that asks the server for the model's own prediction
const PREDICTED_TEXT = "The model's prediction";

const state = { audits: [], limits: null, audit: null, items: [], nextId: 0 };
const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function percent(x) { return (100 * x).toFixed(1) + "%"; }
function bytes(n) { return n >= 1048576 ? (n / 1048576).toFixed(1) + " MiB" : Math.round(n / 1024) + " KiB"; }

function classSelect(value) {
  const select = el("select");
  const none = el("option", "Choose…");
  none.value = "";
  select.appendChild(none);
  const predicted = el("option", PREDICTED_TEXT);
  predicted.value = PREDICTED;
  select.appendChild(predicted);
  for (const name of state.audit.classes) {
    const option = el("option", name);
    option.value = name;
    select.appendChild(option);
  }
  select.value = value;
  return select;
}

function labelChoices() {
  return new Set([PREDICTED, ...(state.audit ? state.audit.classes : [])]);
}

// The check is sent only once every image has a label; until then the button stays disabled and says why.
function updateCheck() {
  const missing = state.items.filter((item) => !item.label).length;
  $("check").disabled = state.items.length === 0 || !state.audit || missing > 0;
  const hint = $("label-hint");
  hint.textContent = missing
    ? `Choose a class, or “${PREDICTED_TEXT}”, for ${missing === 1 ? "1 image" : `${missing} images`} ` +
      "before checking: a wrong class gives a meaningless score."
    : "";
  hint.hidden = !missing;
}

function renderAudit() {
  const a = state.audit;
  $("audit-title").textContent = a.title;
  $("audit-description").textContent = a.description;
  const facts = $("audit-facts");
  facts.replaceChildren();
  facts.appendChild(el("li", `Classes: ${a.classes.join(", ")}.`));
  if (a.input.side) {
    facts.appendChild(el("li", `Images are resized to ${a.input.side}×${a.input.side} pixels` +
      (a.input.channels === 1 ? ", greyscale." : ".")));
  }
  if (a.gap) {
    facts.appendChild(el("li", `The model is ${percent(a.gap.members_accuracy)} accurate on its training images ` +
      `and ${percent(a.gap.external_accuracy)} on images it never saw (gap ${(100 * a.gap.accuracy_gap).toFixed(1)} ` +
      "points): the smaller the gap, the less trace its training data leaves."));
  }
  facts.appendChild(el("li", `Verdicts are calibrated to a false-positive rate of ${a.alpha} against ` +
    `${a.n_calibration} held-out images the model never saw.`));
  const batch = $("batch-class");
  batch.replaceChildren(...classSelect("").children);
  batch.value = "";
  $("grey-row").hidden = a.input.channels !== 1;
  const choices = labelChoices();
  for (const item of state.items) {
    if (!choices.has(item.label)) item.label = "";  // a class of another audit: no choice, not a guess
  }
  renderPending();
}

function renderPending() {
  const body = $("pending").querySelector("tbody");
  body.replaceChildren();
  for (const item of state.items) {
    const row = el("tr");
    row.dataset.id = String(item.id);
    const thumb = el("td");
    const img = el("img", null, "thumb");
    img.src = item.url;
    img.alt = "";
    thumb.appendChild(img);
    row.appendChild(thumb);
    row.appendChild(el("td", item.file.name));
    const cell = el("td");
    const select = classSelect(item.label);
    select.setAttribute("aria-label", `Class of ${item.file.name}`);
    select.addEventListener("change", () => { item.label = select.value; updateCheck(); });
    cell.appendChild(select);
    row.appendChild(cell);
    const remove = el("button", "Remove");
    remove.type = "button";
    remove.addEventListener("click", () => {
      URL.revokeObjectURL(item.url);
      state.items = state.items.filter((other) => other !== item);
      renderPending();
    });
    const last = el("td");
    last.appendChild(remove);
    row.appendChild(last);
    body.appendChild(row);
  }
  $("pending-count").textContent = String(state.items.length);
  updateCheck();
}

function addFiles(fileList) {
  showError("");
  const files = Array.from(fileList);
  const limits = state.limits;
  const refused = [];
  for (const file of files) {
    if (state.items.length >= limits.max_files) {
      refused.push(`${file.name}: at most ${limits.max_files} images at a time`);
      continue;
    }
    if (file.size > limits.max_file_bytes) {
      refused.push(`${file.name}: larger than ${bytes(limits.max_file_bytes)}`);
      continue;
    }
    state.items.push({ id: state.nextId++, file, label: $("batch-class").value, url: URL.createObjectURL(file) });
  }
  if (refused.length) showError("Not added: " + refused.join("; "));
  renderPending();
}

// Images the classifier gives one identical probability cannot be ranked against each other: say how many.
function tiesNote(images) {
  const counts = new Map();
  for (const image of images) counts.set(image.score, (counts.get(image.score) || 0) + 1);
  const groups = [...counts].filter(([, count]) => count > 1).sort((a, b) => b[1] - a[1]);
  if (groups.length === 0) return "";
  const tied = groups.reduce((sum, [, count]) => sum + count, 0);
  const which = groups.length === 1
    ? `the same probability, ${groups[0][0].toFixed(3)}, to ${tied} of your ${images.length} images`
    : `identical probabilities to ${tied} of your ${images.length} images (` +
      groups.map(([score, count]) => `${count} at ${score.toFixed(3)}`).join(", ") + ")";
  return `The classifier gives ${which}, so it cannot rank them against each other.`;
}

function renderResult(result) {
  const v = result.verdict;
  $("headline").textContent = v.rejects_h0
    ? "Evidence that these images were used to train the model."
    : "No evidence that these images were used to train the model.";
  $("headline-note").textContent = v.rejects_h0 ? ""
    : "This is not an all-clear: it does not show that the images were not used, only that this test could " +
      "not tell them apart from images the model never saw.";
  $("headline-note").hidden = v.rejects_h0;
  $("verdict").classList.toggle("evidence", v.rejects_h0);
  $("conclusion").textContent = v.conclusion;
  $("p-value").textContent = v.p_value < 0.001 ? v.p_value.toExponential(2) : v.p_value.toFixed(3);
  $("alpha").textContent = String(v.alpha);
  $("n-images").textContent = String(v.n_candidates);
  $("n-calibration").textContent = String(v.n_calibration);
  $("test").textContent = v.test;
  const caveats = $("caveats");
  caveats.replaceChildren(...result.caveats.map((c) => {
    const item = el("li", c.text);
    item.dataset.topic = c.topic;
    return item;
  }));
  const body = $("results").querySelector("tbody");
  body.replaceChildren();
  for (const image of result.images) {
    const row = el("tr");
    row.appendChild(el("td", image.name));
    row.appendChild(el("td", image.label_source === PREDICTED ? `${image.label} (model's prediction)` : image.label));
    row.appendChild(el("td", image.score.toFixed(3), "number"));
    const barCell = el("td");
    const bar = el("meter");
    bar.min = 0;
    bar.max = 1;
    bar.value = image.score;
    barCell.appendChild(bar);
    row.appendChild(barCell);
    body.appendChild(row);
  }
  const ties = tiesNote(result.images);
  $("ties").textContent = ties;
  $("ties").hidden = !ties;
  $("result-section").hidden = false;
  $("result-section").scrollIntoView({ block: "start" });  // the answer is below the images: bring it up
}

async function check() {
  showError("");
  const form = new FormData();
  for (const item of state.items) {
    form.append("files", item.file, item.file.name);
    form.append("labels", item.label);
  }
  form.append("to_grey", $("to-grey").checked ? "true" : "false");
  $("check").disabled = true;
  $("status").textContent = `Checking ${state.items.length} image${state.items.length === 1 ? "" : "s"}…`;
  try {
    const response = await fetch(`/api/audits/${encodeURIComponent(state.audit.name)}/score`,
      { method: "POST", body: form });
    const unreadable = "The server could not answer this check; try again in a moment.";
    const payload = await response.json().catch(() => ({ detail: unreadable }));
    if (!response.ok) {
      showError(typeof payload.detail === "string" ? payload.detail : unreadable);
      $("status").textContent = "";
      return;
    }
    renderResult(payload);
    $("status").textContent = `Done in ${payload.seconds.toFixed(2)} s.`;
  } catch {
    showError("Could not reach the server: check your connection, then try again.");
    $("status").textContent = "";
  } finally {
    updateCheck();
  }
}

async function start() {
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    addFiles(event.dataTransfer.files);
  });
  $("files").addEventListener("change", (event) => { addFiles(event.target.files); event.target.value = ""; });
  $("check").addEventListener("click", check);
  $("clear").addEventListener("click", () => {
    for (const item of state.items) URL.revokeObjectURL(item.url);
    state.items = [];
    renderPending();
  });
  $("apply-all").addEventListener("click", () => {
    const label = $("batch-class").value;
    if (!label) return;  // "Choose…" is no choice: it never clears the ones made
    for (const item of state.items) item.label = label;
    renderPending();
  });
  $("audit").addEventListener("change", () => {
    state.audit = state.audits.find((a) => a.name === $("audit").value);
    $("result-section").hidden = true;
    renderAudit();
  });
  try {
    const response = await fetch("/api/audits");
    const listing = await response.json();
    state.audits = listing.audits;
    state.limits = listing.limits;
    $("version").textContent = `gmint ${listing.gmint_version}`;
    $("limits").textContent = `PNG, JPEG, BMP or PPM; up to ${listing.limits.max_files} images of at most ` +
      `${bytes(listing.limits.max_file_bytes)} each.`;
    if (state.audits.length === 0) {
      showError("This server publishes no audits.");
      return;
    }
    for (const a of state.audits) {
      const option = el("option", a.title);
      option.value = a.name;
      $("audit").appendChild(option);
    }
    state.audit = state.audits[0];
    renderAudit();
    document.body.dataset.ready = "true";
  } catch {
    showError("Could not load the audits from the server: check your connection, then reload the page.");
  }
}

document.addEventListener("DOMContentLoaded", start);
