// The page of `alexnet serve`: choose or drop an image, see it, its top-k classes with bars and the time taken.
"use strict";
const $ = (id) => document.getElementById(id);

fetch("/model").then((r) => r.json()).then((card) => {
  $("model-name").textContent = card.name;
  const [c, h, w] = card.input_size;
  $("model-line").textContent = `${card.num_classes} classes, ${c}×${h}×${w} input, ` +
    `${card.parameters.toLocaleString()} parameters (${card.checkpoint.file}, ${card.backend})`;
}).catch(() => { $("model-line").textContent = "could not read /model"; });

function show(file) {
  if (!file) return;
  const preview = $("preview");
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  $("drop-text").textContent = file.name + " (choose another, or drop one)";
  predict(file);
}

async function predict(file) {
  const status = $("status");
  status.className = "muted";
  status.textContent = "predicting…";
  $("topk").replaceChildren();
  $("timing").textContent = "";
  const form = new FormData();
  form.append("file", file, file.name);
  const started = performance.now();
  let reply, body;
  try {
    reply = await fetch("/predict", { method: "POST", body: form });
    body = await reply.json();
  } catch (err) {
    status.className = "error";
    status.textContent = "no answer from the server: " + err;
    return;
  }
  const roundTrip = performance.now() - started;
  if (!reply.ok) {
    status.className = "error";
    status.textContent = `${reply.status}: ${body.error}`;
    return;
  }
  status.textContent = "";
  for (const item of body.topk) {
    const li = document.createElement("li");
    li.className = "prediction";
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = (100 * item.prob).toFixed(1) + "%";
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = item.label;
    const prob = document.createElement("span");
    prob.className = "prob";
    prob.textContent = (100 * item.prob).toFixed(1) + "%";
    li.append(bar, label, prob);
    $("topk").append(li);
  }
  $("timing").textContent = `${body.ms.toFixed(1)} ms on the server, ${roundTrip.toFixed(0)} ms round trip`;
}

$("file").addEventListener("change", (e) => show(e.target.files[0]));
const drop = $("drop");
["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => {
  e.preventDefault();
  drop.classList.add("over");
}));
["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => {
  e.preventDefault();
  drop.classList.remove("over");
}));
drop.addEventListener("drop", (e) => show(e.dataTransfer.files[0]));
