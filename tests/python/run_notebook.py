"""Executes a notebook with nbclient and a real IPython kernel (ipykernel), as Jupyter does,
in a working folder; fails on any cell error. Prints what its outputs hold, as JSON."""
import json
import os
import sys

import nbformat
from nbclient import NotebookClient

notebook, work, csv = sys.argv[1], sys.argv[2], sys.argv[3]
nb = nbformat.read(notebook, as_version=4)
os.environ["WINE_CSV"] = csv
client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": work}})
client.execute()
streams, texts, html, svg, errors = [], [], 0, 0, 0
for cell in nb.cells:
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            streams.append(out["text"])
        elif out["output_type"] == "error":
            errors += 1
        else:
            data = out.get("data", {})
            html += "text/html" in data
            svg += "image/svg+xml" in data
            texts.append(data.get("text/plain", ""))
print(json.dumps({"errors": errors, "streams": "".join(streams), "text": "\n".join(texts),
                  "html": html, "svg": svg}))
