"""The report's HTML (Jinja2), kept in a module so it ships inside the package."""

REPORT_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>depthdata EDA — {{ store_url }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; }
.note { color: #666; font-size: 0.9em; }
</style>
</head>
<body>
<h1>depthdata EDA report</h1>
<p class="note">Store <code>{{ store_url }}</code> · version {{ store_version }} · schema {{ schema_version }} · written by depthdata
{{ package_version }} at {{ generated }} · grid seed {{ seed }}.
Depth and sparse values are metres; the teacher field is relative disparity in [0, 1] (larger = nearer).
Per-sample statistics: <code>{{ stats_name }}</code>.</p>

<h2 id="groups">Groups</h2>
<table>
<tr><th>group</th><th>samples</th><th>ok</th><th>quarantined</th><th>not built</th><th>outliers</th>
<th>fields</th><th>stages (complete shards / shards)</th></tr>
{% for g in groups %}
<tr><td>{{ g.group }}</td><td class="num">{{ g.samples }}</td><td class="num">{{ g.ok }}</td>
<td class="num">{{ g.quarantined }}</td><td class="num">{{ g.not_built }}</td><td class="num">{{ g.outliers }}</td>
<td>{{ g.fields }}</td><td>{{ g.stages }}</td></tr>
{% endfor %}
</table>

<h2 id="quarantined">Quarantined samples</h2>
{% if quarantined %}
<table>
<tr><th>group</th><th>sample</th><th>source</th><th>reason</th></tr>
{% for q in quarantined %}
<tr><td>{{ q.group }}</td><td>{{ q.sample_id }}</td><td>{{ q.source_uri }}</td><td>{{ q.reason }}</td></tr>
{% endfor %}
</table>
{% if quarantined_more %}<p class="note">… and {{ quarantined_more }} more (see {{ stats_name }}, status = quarantined).</p>{% endif %}
{% else %}<p>None.</p>{% endif %}

<h2 id="depth">Depth distributions</h2>
{% for f in depth_figures %}
<h3>{{ f.title }}</h3><img alt="{{ f.title }}" src="data:image/png;base64,{{ f.png }}">
{% else %}<p>No depth or sparse field in this store.</p>{% endfor %}

<h2 id="valid">Valid-fraction distribution</h2>
{% if valid_figure %}<img alt="depth valid fraction" src="data:image/png;base64,{{ valid_figure }}">
{% else %}<p>No depth field in this store.</p>{% endif %}

<h2 id="teacher">Teacher</h2>
{% for f in teacher_figures %}
<h3>{{ f.title }}</h3><img alt="{{ f.title }}" src="data:image/png;base64,{{ f.png }}">
{% else %}<p>No teacher field in this store.</p>{% endfor %}

<h2 id="outliers">Outliers</h2>
<p class="note">Robust z-score |z| &gt; {{ rules.z_threshold }} within a group (groups of at least
{{ rules.min_samples }} ok samples), depth valid fraction &lt; {{ rules.min_valid_fraction }},
luma std &lt; {{ rules.min_contrast }}, teacher std &lt; {{ rules.min_teacher_std }}.</p>
{% if outliers %}
<table>
<tr><th>group</th><th>sample</th><th>source</th><th>reasons</th></tr>
{% for o in outliers %}
<tr><td>{{ o.group }}</td><td>{{ o.sample_id }}</td><td>{{ o.source_uri }}</td><td>{{ o.outlier_reasons }}</td></tr>
{% endfor %}
</table>
{% if outliers_more %}<p class="note">… and {{ outliers_more }} more (see {{ stats_name }}, outlier = true).</p>{% endif %}
{% else %}<p>None.</p>{% endif %}

<h2 id="samples">Sample grids</h2>
{% for f in grids %}
<h3>{{ f.title }}</h3><img alt="{{ f.title }}" src="data:image/png;base64,{{ f.png }}">
{% else %}<p>No built samples to show.</p>{% endfor %}
</body>
</html>
"""
