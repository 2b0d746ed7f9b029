"""Minimal SVG charts for bench/run.sh (no third-party packages): line charts, grouped bars,
log-scale bars. Each chart is readable on its own: title, axis labels, legend."""
import math

PALETTE = ["#1b6ac9", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#0b7285", "#c92a2a", "#5c940d", "#495057"]
W, H = 760, 420
L, R, T, B = 70, 190, 40, 60


def _esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _frame(title, xlabel, ylabel):
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{_esc(title)}</text>',
           f'<text x="{L + (W - L - R) / 2}" y="{H - 14}" text-anchor="middle">{_esc(xlabel)}</text>',
           f'<text x="16" y="{T + (H - T - B) / 2}" text-anchor="middle" transform="rotate(-90 16 {T + (H - T - B) / 2})">{_esc(ylabel)}</text>',
           f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>',
           f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>']
    return out


def _legend(out, names):
    for i, n in enumerate(names):
        y = T + 10 + i * 18
        out.append(f'<rect x="{W - R + 14}" y="{y - 9}" width="12" height="12" fill="{PALETTE[i % len(PALETTE)]}"/>')
        out.append(f'<text x="{W - R + 32}" y="{y + 1}">{_esc(n)}</text>')


def _nice(v):
    if v <= 0:
        return 1
    e = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * e:
            return m * e
    return 10 * e


def _fmt(v):
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10 or v == int(v):
        return f"{v:.0f}"
    return f"{v:.2g}"


def line_chart(title, xlabel, ylabel, series, cap=None):
    """series: {name: [(x, y), ...]}; cap: a horizontal dashed line (value, label)."""
    xs = [x for pts in series.values() for x, _ in pts] or [0, 1]
    ys = [y for pts in series.values() for _, y in pts] + ([cap[0]] if cap else []) or [1]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y1 = _nice(max(ys) * 1.05)
    px = lambda x: L + (x - x0) / (x1 - x0) * (W - L - R)
    py = lambda y: H - B - y / y1 * (H - T - B)
    out = _frame(title, xlabel, ylabel)
    for k in range(6):
        v = y1 * k / 5
        out.append(f'<line x1="{L}" y1="{py(v):.1f}" x2="{W - R}" y2="{py(v):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{L - 6}" y="{py(v) + 4:.1f}" text-anchor="end">{_fmt(v)}</text>')
    for k in range(6):
        v = x0 + (x1 - x0) * k / 5
        out.append(f'<text x="{px(v):.1f}" y="{H - B + 16}" text-anchor="middle">{_fmt(v)}</text>')
    if cap:
        out.append(f'<line x1="{L}" y1="{py(cap[0]):.1f}" x2="{W - R}" y2="{py(cap[0]):.1f}" stroke="black" stroke-dasharray="6 4"/>')
        out.append(f'<text x="{W - R - 4}" y="{py(cap[0]) - 5:.1f}" text-anchor="end">{_esc(cap[1])}</text>')
    for i, (name, pts) in enumerate(series.items()):
        d = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        out.append(f'<polyline fill="none" stroke="{PALETTE[i % len(PALETTE)]}" stroke-width="1.6" points="{d}"/>')
    _legend(out, list(series))
    out.append("</svg>")
    return "\n".join(out)


def bar_chart(title, ylabel, groups, names, values, log=False, unit=""):
    """groups: x categories; names: one bar per name in each group; values[g][n] (None: absent)."""
    out = _frame(title, "", ylabel + (" (log scale)" if log else ""))
    vals = [v for row in values for v in row if v is not None and (v > 0 or not log)]
    top = max(vals) if vals else 1
    if log:
        lo = 10 ** math.floor(math.log10(min(v for v in vals if v > 0))) if vals else 1
        hi = 10 ** math.ceil(math.log10(top)) if vals else 10
        py = lambda v: H - B - (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * (H - T - B)
        ticks = [10 ** e for e in range(int(math.log10(lo)), int(math.log10(hi)) + 1)]
    else:
        hi = _nice(top * 1.1) if top > 0 else 1
        py = lambda v: H - B - v / hi * (H - T - B)
        ticks = [hi * k / 5 for k in range(6)]
    for v in ticks:
        out.append(f'<line x1="{L}" y1="{py(v):.1f}" x2="{W - R}" y2="{py(v):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{L - 6}" y="{py(v) + 4:.1f}" text-anchor="end">{_fmt(v)}{unit}</text>')
    gw = (W - L - R) / max(1, len(groups))
    bw = gw * 0.8 / max(1, len(names))
    for g, group in enumerate(groups):
        gx = L + g * gw + gw * 0.1
        out.append(f'<text x="{L + g * gw + gw / 2:.1f}" y="{H - B + 16}" text-anchor="middle">{_esc(group)}</text>')
        for n in range(len(names)):
            v = values[g][n]
            if v is None:
                continue
            y = py(v) if (v > 0 or not log) else H - B
            out.append(f'<rect x="{gx + n * bw:.1f}" y="{y:.1f}" width="{bw * 0.92:.1f}" height="{H - B - y:.1f}" fill="{PALETTE[n % len(PALETTE)]}">'
                       f'<title>{_esc(names[n])} {_esc(group)}: {_fmt(v)}{unit}</title></rect>')
    _legend(out, names)
    out.append("</svg>")
    return "\n".join(out)
