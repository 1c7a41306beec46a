// Shared by the canvas widgets (put ahead of each one's module by _canvas.esm).

// The widget's image buffer as bytes: `data` (a DataView or ArrayBuffer), or `data_b64`
// where the host's widget manager cannot carry binary buffers.
function bytesOf(model) {
  if (model.get("encoding") === "base64") {
    const text = atob(model.get("data_b64") || "");
    const out = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
    return out;
  }
  const raw = model.get("data");
  if (!raw || !raw.byteLength) return new Uint8Array(0);
  return raw instanceof DataView ? new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength)
                                 : new Uint8Array(raw.buffer || raw);
}

// A "Save PNG" button that downloads `canvas` as `filename`, drawn here, nothing sent.
function saveButton(canvas, filename, what) {
  const save = document.createElement("button");
  save.textContent = "Save PNG";
  save.title = `Download ${what} as a PNG image (drawn here, nothing sent to the kernel)`;
  save.addEventListener("click", () => {
    canvas.toBlob((blob) => {
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = filename;
      link.click();
      setTimeout(() => URL.revokeObjectURL(link.href), 1000);
    }, "image/png");
  });
  return save;
}
