"""Pictures of a run: the plate heat map (:mod:`.heatmap`) and the QC montage
(:mod:`.montage`). Plain functions of result tables and arrays, drawn with
matplotlib's Agg canvas (no display, no pyplot state), returning PNG bytes and the
geometry of what they drew."""

from __future__ import annotations

import io

PNG_DPI = 100


def png_bytes(canvas, palette: bool = False) -> bytes:
    """The drawn canvas as an RGB PNG (no alpha: the figures are opaque), or with
    ``palette`` as 256 colours: fields of a microscope are noise that PNG's filters
    hardly compress, and 8 bits per pixel instead of 24 halve the file."""
    from PIL import Image

    image = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
    image = image.convert("RGB")
    if palette:
        image = image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
