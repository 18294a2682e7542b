"""Stage 9, applications, one module or package per command, none importing another: sort a folder (sort.py),
the zoomed-vs-normal filter (zoomed.py), the demo (demo.py), the web service and API (serve/), the data audit
(audit/) and product matching across postings (match/)."""
