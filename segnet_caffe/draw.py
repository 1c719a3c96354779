"""Network diagrams: layers as boxes coloured by type, blobs as the edges between them.

A layered (Sugiyama) layout from grandalf, drawn with matplotlib: pure Python, so it needs no
Graphviz binary. Pooling-mask blobs (a Pooling layer's second top) are drawn dashed, so the
encoder-to-decoder index paths of SegNet stand out.
"""
from dataclasses import dataclass

from .errors import CaffeError
from .net import filter_net
from .proto import caffe_pb2

TYPE_COLOURS = {
    "Convolution": "#9ecae1", "Deconvolution": "#9ecae1", "InnerProduct": "#9ecae1",
    "BN": "#a1d99b", "BatchNorm": "#a1d99b", "Scale": "#a1d99b", "MVN": "#c7e9c0",
    "LRN": "#c7e9c0", "ReLU": "#fdd0a2", "PReLU": "#fdd0a2", "Dropout": "#fdd0a2",
    "Pooling": "#fc9272", "Upsample": "#fdae6b",
    "DenseImageData": "#d9d9d9", "ImageData": "#d9d9d9", "Input": "#d9d9d9", "Data": "#d9d9d9",
    "SoftmaxWithLoss": "#bcbddc", "Softmax": "#bcbddc", "Accuracy": "#dadaeb",
}
OTHER_COLOUR = "#f0f0f0"
MASK_COLOUR = "#cb181d"
FONT_SIZE = 8
CHAR_WIDTH, LINE_HEIGHT, PADDING = 5.2, 11.0, 8.0  # points, for FONT_SIZE


def _pair(value, h, w, default):
    """A Caffe (h, w) parameter given either as a repeated field or as explicit _h/_w fields."""
    if h or w:
        return h, w
    values = list(value) or [default]
    return values[0], values[-1]


def describe(layer):
    """One short line of a layer's main settings, for its box (empty when nothing is worth it)."""
    kind = layer.type
    if kind in ("Convolution", "Deconvolution"):
        p = layer.convolution_param
        kh, kw = _pair(p.kernel_size, p.kernel_h, p.kernel_w, 1)
        sh, sw = _pair(p.stride, p.stride_h, p.stride_w, 1)
        stride = f" /{sh}" if (sh, sw) != (1, 1) else ""
        return f"{kh}x{kw}{stride}, {p.num_output} out"
    if kind == "Pooling":
        p = layer.pooling_param
        if p.global_pooling:
            return f"global {caffe_pb2.PoolingParameter.PoolMethod.Name(p.pool)}"
        kh, kw = (p.kernel_h, p.kernel_w) if p.kernel_h else (p.kernel_size, p.kernel_size)
        sh = p.stride_h or p.stride
        return f"{caffe_pb2.PoolingParameter.PoolMethod.Name(p.pool)} {kh}x{kw} /{sh}"
    if kind == "Upsample":
        p = layer.upsample_param
        return f"to {p.upsample_h}x{p.upsample_w}" if p.upsample_h else f"x{p.scale}"
    if kind == "BN":
        return caffe_pb2.BNParameter.BNMode.Name(layer.bn_param.bn_mode)
    if kind == "Dropout":
        return f"ratio {layer.dropout_param.dropout_ratio:g}"
    if kind in ("DenseImageData", "ImageData"):
        p = layer.dense_image_data_param if kind == "DenseImageData" else layer.image_data_param
        return f"batch {p.batch_size}"
    if kind == "InnerProduct":
        return f"{layer.inner_product_param.num_output} out"
    return ""


@dataclass
class _Box:
    """A node's size for the layout (grandalf reads w and h) and, after it, its centre."""
    w: float
    h: float
    xy: tuple = (0.0, 0.0)


class _Path:
    """An edge's view for grandalf: the polyline it is routed along."""

    def setpath(self, points):
        self.points = points


@dataclass
class Diagram:
    """A laid-out net: boxes (name, type, text, centre, size) and edges (blob, points, is_mask)."""
    boxes: list
    edges: list


def layout(net_param, phase=caffe_pb2.TEST, rankdir="TB"):
    """Lay the net out (after the phase's include/exclude rules) as a Diagram."""
    from grandalf.graphs import Edge, Graph, Vertex
    from grandalf.layouts import SugiyamaLayout
    from grandalf.routing import route_with_lines

    if rankdir not in ("TB", "LR"):
        raise ValueError(f"rankdir must be TB or LR, got {rankdir!r}")
    net = filter_net(net_param, caffe_pb2.NetState(phase=phase))
    vertices, texts, producer, links = [], [], {}, []
    masks = {layer.top[1] for layer in net.layer if layer.type == "Pooling" and len(layer.top) > 1}
    for index, layer in enumerate(net.layer):
        lines = [layer.name, layer.type] + [line for line in [describe(layer)] if line]
        width = max(len(line) for line in lines) * CHAR_WIDTH + 2 * PADDING
        height = len(lines) * LINE_HEIGHT + PADDING
        box = _Box(height, width) if rankdir == "LR" else _Box(width, height)
        vertex = Vertex(index)
        vertex.view = box
        vertices.append(vertex)
        texts.append((layer.name, layer.type, "\n".join(lines)))
        for blob in layer.bottom:
            if blob in producer:  # an input the net does not produce has no edge to draw
                links.append((producer[blob], index, blob))
        for blob in layer.top:
            producer[blob] = index
    edges = []
    for source, target, blob in links:
        edge = Edge(vertices[source], vertices[target])
        edge.view = _Path()
        edges.append((edge, blob))
    graph = Graph(vertices, [edge for edge, _ in edges])
    for component in graph.C:
        sugiyama = SugiyamaLayout(component)
        sugiyama.xspace, sugiyama.yspace = 24, 28
        sugiyama.route_edge = route_with_lines  # edges end on the boxes' borders
        sugiyama.init_all()
        sugiyama.draw()
    # Components side by side (grandalf lays each out around the origin).
    offset = 0.0
    for component in graph.C:
        xs = [v.view.xy[0] - v.view.w / 2 for v in component.sV]
        shift = offset - min(xs)
        for v in component.sV:
            v.view.xy = (v.view.xy[0] + shift, v.view.xy[1])
        for edge in component.sE:
            edge.view.points = [(x + shift, y) for x, y in edge.view.points]
        offset = max(v.view.xy[0] + v.view.w / 2 for v in component.sV) + 40

    def oriented(point):
        x, y = point
        return (y, -x) if rankdir == "LR" else (x, -y)

    boxes = []
    for vertex, (name, kind, text) in zip(vertices, texts):
        w, h = vertex.view.w, vertex.view.h
        boxes.append((name, kind, text, oriented(vertex.view.xy), (h, w) if rankdir == "LR" else (w, h)))
    # Parallel edges (a pooling layer's output and mask into the same Upsample) side by side.
    parallel = {}
    for edge, blob in edges:
        parallel.setdefault(edge.v, []).append(blob)
    diagram_edges = []
    for edge, blob in edges:
        siblings = parallel[edge.v]
        shift = (siblings.index(blob) - (len(siblings) - 1) / 2) * 8
        points = [oriented((x + shift, y)) for x, y in edge.view.points]
        diagram_edges.append((blob, points, blob in masks))
    return Diagram(boxes, diagram_edges)


def draw_net_to_file(net_param, path, phase=caffe_pb2.TEST, rankdir="TB", title=None):
    """Draw the net into an image file (PNG, SVG or PDF by its extension)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    diagram = layout(net_param, phase, rankdir)
    if not diagram.boxes:
        raise CaffeError(f'net "{net_param.name}" has no layers in phase '
                         f"{caffe_pb2.Phase.Name(phase)}: nothing to draw")
    corners = [(cx + sx * w / 2, cy + sy * h / 2) for _, _, _, (cx, cy), (w, h) in diagram.boxes
               for sx in (-1, 1) for sy in (-1, 1)]
    corners += [point for _, points, _ in diagram.edges for point in points]
    xs, ys = zip(*corners)
    margin = 20
    x0, x1, y0, y1 = min(xs) - margin, max(xs) + margin, min(ys) - margin, max(ys) + margin
    figure = plt.figure(figsize=((x1 - x0) / 72, (y1 - y0) / 72 + (0.3 if title else 0)))
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_xlim(x0, x1)
    axes.set_ylim(y0, y1)
    axes.set_axis_off()
    for blob, points, is_mask in diagram.edges:
        xs, ys = zip(*points)
        style = dict(color=MASK_COLOUR, linestyle="--") if is_mask else dict(color="#525252")
        axes.plot(xs, ys, linewidth=0.9, zorder=1, **style)
        axes.annotate("", xy=points[-1], xytext=points[-2], zorder=1,
                      arrowprops=dict(arrowstyle="-|>", color=style["color"], linewidth=0.9,
                                      shrinkA=0, shrinkB=0))
        if is_mask:
            mid = points[len(points) // 2]
            axes.text(mid[0], mid[1], blob, fontsize=FONT_SIZE - 2, color=MASK_COLOUR,
                      ha="center", va="center", zorder=3,
                      bbox=dict(boxstyle="round,pad=0.1", facecolor="white", edgecolor="none"))
    for name, kind, text, (cx, cy), (w, h) in diagram.boxes:
        axes.add_patch(FancyBboxPatch((cx - w / 2, cy - h / 2), w, h, zorder=2,
                                      boxstyle="round,pad=0,rounding_size=4", linewidth=0.8,
                                      facecolor=TYPE_COLOURS.get(kind, OTHER_COLOUR),
                                      edgecolor="#252525"))
        axes.text(cx, cy, text, fontsize=FONT_SIZE, ha="center", va="center", zorder=3,
                  linespacing=1.15)
    if title:
        figure.suptitle(title, fontsize=FONT_SIZE + 2)
    figure.savefig(path, dpi=110)
    plt.close(figure)
