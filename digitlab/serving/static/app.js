// The draw-a-digit page's behaviour (index.html): draw or upload, POST /predict, show the answer.
// It only ever sets textContent (never innerHTML), so an upload's file name cannot inject markup, and it
// talks only to the server that served it.
"use strict";
const pad = document.getElementById("pad");
const pen = pad.getContext("2d");
const result = document.getElementById("result");
const digit = document.getElementById("digit");
const confidence = document.getElementById("confidence");
const errorLine = document.getElementById("error");
const seen = document.getElementById("seen");
const drop = document.getElementById("drop");
const fileInput = document.getElementById("file");

function clearPad() {
  pen.fillStyle = "#000";
  pen.fillRect(0, 0, pad.width, pad.height);
}

// Canvas coordinates of a pointer event, whatever size CSS gives the canvas.
function point(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * pad.width / box.width, (event.clientY - box.top) * pad.height / box.height];
}

let last = null;  // the previous point of the stroke being drawn, null between strokes
pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  last = point(event);
  pen.fillStyle = "#fff";
  pen.beginPath();
  pen.arc(last[0], last[1], pen.lineWidth / 2, 0, 2 * Math.PI);
  pen.fill();
});
pad.addEventListener("pointermove", (event) => {
  if (last === null) return;
  const next = point(event);
  pen.beginPath();
  pen.moveTo(last[0], last[1]);
  pen.lineTo(next[0], next[1]);
  pen.stroke();
  last = next;
});
function endStroke() {
  if (last === null) return;
  last = null;
  predictPad();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

function predictPad() {
  pad.toBlob((blob) => {
    const form = new FormData();
    form.append("image", blob, "drawing.png");
    send(form);
  }, "image/png");
}

function predictFile(file) {
  if (!file) return;
  const form = new FormData();
  form.append("image", file, file.name);
  send(form);
}

// Only the answer to the latest request is shown: a stroke may end while an earlier one is on its way.
let latest = 0;
async function send(form) {
  const request = ++latest;
  result.dataset.state = "busy";
  let answer;
  try {
    const response = await fetch("predict", { method: "POST", body: form });
    const body = await response.json();
    answer = response.ok ? body : { error: body.error || ("the server answered " + response.status) };
  } catch (failure) {
    answer = { error: "no answer from the server (" + failure.message + ")" };
  }
  if (request !== latest) return;
  // A reading has probabilities, also one that is "not a digit" (digit null, error "not a digit"); a failure has none.
  if (answer.probabilities) showReading(answer); else showError(answer.error);
}

function setBars(probabilities) {
  for (let d = 0; d < 10; d++) {
    const p = probabilities ? probabilities[d] : 0;
    const bar = document.getElementById("bar-" + d);
    // Through the CSSOM, which a style-src without 'unsafe-inline' allows; a style="..." attribute it would not.
    bar.style.width = (100 * p).toFixed(1) + "%";
    bar.dataset.probability = String(p);
    document.getElementById("value-" + d).textContent = probabilities ? (100 * p).toFixed(1) + "%" : "";
  }
}

function showReading(reading) {
  const sure = (100 * reading.confidence).toFixed(1) + "%";
  // digit null: the model judged the image is no digit (a letter, a scribble) and gave no guess.
  const refused = reading.digit === null;
  digit.textContent = refused ? "\u2715" : String(reading.digit);
  if (refused) {
    const guess = reading.probabilities.indexOf(Math.max(...reading.probabilities));
    confidence.textContent = "Not a digit: the best guess, " + guess + ", has only " + sure +
      " confidence. Draw one digit, 0 to 9.";
  } else {
    confidence.textContent = sure + " sure; next most likely: " + reading.runner_up;
  }
  errorLine.textContent = "";
  errorLine.hidden = true;
  setBars(reading.probabilities);
  const picture = seen.getContext("2d").createImageData(28, 28);
  reading.image.forEach((row, y) => row.forEach((grey, x) => {
    picture.data.set([grey, grey, grey, 255], 4 * (28 * y + x));
  }));
  seen.getContext("2d").putImageData(picture, 0, 0);
  if (refused) delete result.dataset.digit; else result.dataset.digit = String(reading.digit);
  result.dataset.state = refused ? "not-a-digit" : "done";
}

function showError(message) {
  digit.textContent = "\u2013";
  confidence.textContent = "";
  errorLine.textContent = message;
  errorLine.hidden = false;
  setBars(null);
  seen.getContext("2d").clearRect(0, 0, 28, 28);
  delete result.dataset.digit;
  result.dataset.state = "error";
}

document.getElementById("clear").addEventListener("click", () => {
  clearPad();
  fileInput.value = "";
  latest++;  // an answer still on its way is for the old drawing
  digit.textContent = "?";
  confidence.textContent = "Draw a digit to see what the model reads.";
  errorLine.hidden = true;
  setBars(null);
  seen.getContext("2d").clearRect(0, 0, 28, 28);
  delete result.dataset.digit;
  result.dataset.state = "idle";
});
document.getElementById("predict").addEventListener("click", predictPad);
fileInput.addEventListener("change", () => predictFile(fileInput.files[0]));

// A file dropped anywhere is read, instead of the browser leaving the page to show it.
window.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
window.addEventListener("dragleave", () => drop.classList.remove("over"));
window.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  predictFile(event.dataTransfer.files[0]);
});

pen.lineWidth = 20;  // about MNIST's stroke width once the digit is scaled into its 20x20 box
pen.lineCap = "round";
pen.lineJoin = "round";
pen.strokeStyle = "#fff";
clearPad();
