"""Network diagrams with pycaffe's caffe.draw API: layers as boxes coloured by type, blobs as
the edges between them.

`draw_net` / `draw_net_to_file` lay the net out in layers (Sugiyama, from grandalf) and draw it
with matplotlib: pure Python, so no Graphviz binary is needed. The signatures, defaults and
`phase=None` (every layer) are pycaffe's; the picture is ours: a layer is a box holding its
name, type, main settings and, with display_lrm, its learning-rate multipliers; a blob is an
edge from the layer writing it to each layer reading it (pycaffe draws blobs as nodes too);
pooling-mask blobs (a Pooling layer's second top) are drawn dashed, so the encoder-to-decoder
index paths of SegNet stand out. Any format matplotlib writes (png, pdf, svg, ps, eps, jpg,
tif, webp...) is available; "raw" and "dot" give the Graphviz source of `get_pydot_graph`
(pycaffe's ".raw", for feeding to Graphviz by hand).

`get_pydot_graph` builds pycaffe's pydot graph (a node per layer and per blob, an edge per
bottom and per top, pycaffe's labels and colours) for those who render with Graphviz.

Where we differ from pycaffe, and why: nets are upgraded first (V1 `layers`, legacy `input`
fields), as Caffe does when it builds them, so old prototxts draw instead of coming out empty;
`phase` applies Caffe's own include/exclude rules (stages and levels of a rule that has them
keep the layer out, where pycaffe looks at the phase only, reading a rule without a phase as
TRAIN); a net with no layer to draw is an error rather than an empty picture.
"""
import os
from dataclasses import dataclass
from io import BytesIO

from .errors import CaffeError
from .io import upgrade_net
from .net_graph import filter_net
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


LEARNING_LAYERS = ("Convolution", "Deconvolution", "InnerProduct")


def get_layer_lr_mult(layer):
    """(weights, bias) learning-rate multipliers of a Convolution, Deconvolution or
    InnerProduct layer, 1.0 where no ParamSpec gives one (pycaffe's). ValueError for other
    types and for more than two ParamSpecs."""
    if layer.type not in LEARNING_LAYERS:
        raise ValueError(f"{layer.type} layers do not have a learning rate multiplier")
    if len(layer.param) > 2:
        raise ValueError(f'layer "{layer.name}": could not parse the learning rate multiplier '
                         f"({len(layer.param)} param specs)")
    multipliers = [spec.lr_mult for spec in layer.param] + [1.0, 1.0]
    return multipliers[0], multipliers[1]


def _lr_mult_text(layer):
    """pycaffe's "lr mult: w, b" for learning layers with a nonzero multiplier, else ""."""
    if layer.type not in LEARNING_LAYERS:
        return ""
    weights, bias = get_layer_lr_mult(layer)
    return f"lr mult: {weights:.1f}, {bias:.1f}" if weights or bias else ""


def get_edge_label(layer):
    """pycaffe's label for the edges out of a layer: the batch of a data layer (ours adds
    ImageData and DenseImageData to pycaffe's Data), the outputs of a learning layer, else
    '""' (an empty Graphviz string)."""
    batch_params = {"Data": "data_param", "ImageData": "image_data_param",
                    "DenseImageData": "dense_image_data_param"}
    if layer.type in batch_params:
        return f"Batch {getattr(layer, batch_params[layer.type]).batch_size}"
    if layer.type in ("Convolution", "Deconvolution"):
        return str(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return str(layer.inner_product_param.num_output)
    return '""'


def get_layer_label(layer, rankdir, display_lrm=False):
    """pycaffe's Graphviz label of a layer, quoted: name, (type), for Convolution,
    Deconvolution and Pooling their kernel size, stride and pad, and with display_lrm the
    learning-rate multipliers; separated by spaces for TB/BT layouts, by \\n otherwise."""
    separator = " " if rankdir in ("TB", "BT") else r"\n"
    kind = layer.type
    if kind == "Pooling":
        kind += " " + caffe_pb2.PoolingParameter.PoolMethod.Name(layer.pooling_param.pool)
    parts = [layer.name, f"({kind})"]
    if layer.type == "Pooling":
        p = layer.pooling_param
        parts += [f"kernel size: {p.kernel_size}", f"stride: {p.stride}", f"pad: {p.pad}"]
    elif layer.type in ("Convolution", "Deconvolution"):
        p = layer.convolution_param
        parts += [f"kernel size: {p.kernel_size[0] if p.kernel_size else 1}",
                  f"stride: {p.stride[0] if p.stride else 1}", f"pad: {p.pad[0] if p.pad else 0}"]
    lr_mult = _lr_mult_text(layer) if display_lrm else ""
    return '"%s"' % separator.join(parts + [lr_mult] if lr_mult else parts)


def choose_color_by_layertype(layertype):
    """pycaffe's node colour for a layer type in get_pydot_graph."""
    return {"Convolution": "#FF5050", "Deconvolution": "#FF5050", "Pooling": "#FF9900",
            "InnerProduct": "#CC33FF"}.get(layertype, "#6495ED")


def _prepare(caffe_net, phase):
    """The upgraded net, with only the layers Caffe keeps in `phase` (all when None)."""
    net = upgrade_net(caffe_net, f'net "{caffe_net.name}"')
    return net if phase is None else filter_net(net, caffe_pb2.NetState(phase=phase))


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


# Grandalf lays layers out downwards along y; each rankdir maps its (x, y) to the picture's.
_ORIENT = {"TB": lambda x, y: (x, -y), "BT": lambda x, y: (x, y),
           "LR": lambda x, y: (y, -x), "RL": lambda x, y: (-y, -x)}


def _box_lines(layer, display_lrm):
    """A layer box's text lines: name, type, main settings, learning-rate multipliers."""
    lines = [layer.name, layer.type, describe(layer), _lr_mult_text(layer) if display_lrm else ""]
    return [line for line in lines if line]


def layout(net_param, phase=caffe_pb2.TEST, rankdir="TB", display_lrm=False):
    """Lay the net out as a Diagram: the layers Caffe keeps in `phase` (every layer when
    None), ranked top to bottom (TB), bottom to top (BT), left to right (LR) or right to left
    (RL); display_lrm adds the learning-rate multipliers to the boxes' text."""
    from grandalf.graphs import Edge, Graph, Vertex

    if rankdir not in _ORIENT:
        raise ValueError(f"rankdir must be one of {', '.join(_ORIENT)}, got {rankdir!r}")
    horizontal = rankdir in ("LR", "RL")
    net = _prepare(net_param, phase)
    vertices, texts, producer, links = [], [], {}, []
    masks = {layer.top[1] for layer in net.layer if layer.type == "Pooling" and len(layer.top) > 1}
    for index, layer in enumerate(net.layer):
        lines = _box_lines(layer, display_lrm)
        width = max(len(line) for line in lines) * CHAR_WIDTH + 2 * PADDING
        height = len(lines) * LINE_HEIGHT + PADDING
        vertex = Vertex(index)
        vertex.view = _Box(height, width) if horizontal else _Box(width, height)
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
    _place(Graph(vertices, [edge for edge, _ in edges]))
    oriented = _ORIENT[rankdir]
    boxes = []
    for vertex, (name, kind, text) in zip(vertices, texts):
        size = (vertex.view.h, vertex.view.w) if horizontal else (vertex.view.w, vertex.view.h)
        boxes.append((name, kind, text, oriented(*vertex.view.xy), size))
    # Parallel edges (a pooling layer's output and mask into the same Upsample) side by side.
    parallel = {}
    for edge, blob in edges:
        parallel.setdefault(edge.v, []).append(blob)
    diagram_edges = []
    for edge, blob in edges:
        siblings = parallel[edge.v]
        shift = (siblings.index(blob) - (len(siblings) - 1) / 2) * 8
        points = [oriented(x + shift, y) for x, y in edge.view.points]
        diagram_edges.append((blob, points, blob in masks))
    return Diagram(boxes, diagram_edges)


def _place(graph):
    """Sugiyama layout of each connected component, the components side by side (grandalf
    lays each out around the origin)."""
    from grandalf.layouts import SugiyamaLayout
    from grandalf.routing import route_with_lines

    for component in graph.C:
        sugiyama = SugiyamaLayout(component)
        sugiyama.xspace, sugiyama.yspace = 24, 28
        sugiyama.route_edge = route_with_lines  # edges end on the boxes' borders
        sugiyama.init_all()
        sugiyama.draw()
    offset = 0.0
    for component in graph.C:
        shift = offset - min(v.view.xy[0] - v.view.w / 2 for v in component.sV)
        for v in component.sV:
            v.view.xy = (v.view.xy[0] + shift, v.view.xy[1])
        for edge in component.sE:
            edge.view.points = [(x + shift, y) for x, y in edge.view.points]
        offset = max(v.view.xy[0] + v.view.w / 2 for v in component.sV) + 40


def _figure(diagram, title):
    """A matplotlib Figure (no pyplot, no global backend) of a laid-out Diagram, 1 pt a unit."""
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyBboxPatch

    corners = [(cx + sx * w / 2, cy + sy * h / 2) for _, _, _, (cx, cy), (w, h) in diagram.boxes
               for sx in (-1, 1) for sy in (-1, 1)]
    corners += [point for _, points, _ in diagram.edges for point in points]
    xs, ys = zip(*corners)
    margin = 20
    x0, x1, y0, y1 = min(xs) - margin, max(xs) + margin, min(ys) - margin, max(ys) + margin
    height, title_height = (y1 - y0) / 72, 0.3 if title else 0  # inches
    figure = Figure(figsize=((x1 - x0) / 72, height + title_height))
    axes = figure.add_axes((0, 0, 1, height / (height + title_height)))  # the title above
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
    return figure


DOT_FORMATS = ("raw", "dot")


def _image_format(ext):
    """The format name matplotlib writes for `ext`; CaffeError naming the choices if none."""
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    if ext.lower() not in formats:
        choices = ", ".join(sorted(set(formats) | set(DOT_FORMATS)))
        raise CaffeError(f'cannot draw a net as "{ext}": the formats are {choices}')
    return ext.lower()


def draw_net(caffe_net, rankdir, ext="png", phase=None, display_lrm=False, *, title=None):
    """The drawing of NetParameter `caffe_net` as bytes in format `ext` (pycaffe's draw_net):
    any format matplotlib writes (png, pdf, svg, ps, eps, jpg...), or "raw"/"dot" for the
    Graphviz source of get_pydot_graph. phase: TRAIN or TEST keeps the layers Caffe builds in
    that phase, None draws every layer; display_lrm adds the learning-rate multipliers of
    Convolution, Deconvolution and InnerProduct layers; title (ours) goes above the net."""
    if ext.lower() in DOT_FORMATS:
        return get_pydot_graph(caffe_net, rankdir, phase=phase,
                               display_lrm=display_lrm).to_string().encode()
    image_format = _image_format(ext)
    diagram = layout(caffe_net, phase, rankdir, display_lrm)
    if not diagram.boxes:
        where = "" if phase is None else f" in phase {caffe_pb2.Phase.Name(phase)}"
        raise CaffeError(f'net "{caffe_net.name}" has no layers{where}: nothing to draw')
    buffer = BytesIO()
    _figure(diagram, title).savefig(buffer, format=image_format, dpi=110)
    return buffer.getvalue()


def draw_net_to_file(caffe_net, filename, rankdir="LR", phase=None, display_lrm=False, *,
                     title=None):
    """Draw `caffe_net` into `filename`, in the format its extension names (pycaffe's
    draw_net_to_file; see draw_net for the arguments)."""
    ext = os.path.splitext(os.fspath(filename))[1][1:]
    if not ext:
        raise CaffeError(f'"{filename}" has no extension to choose the image format by '
                         "(.png, .pdf, .svg, ...)")
    image = draw_net(caffe_net, rankdir, ext, phase, display_lrm, title=title)
    with open(filename, "wb") as file:
        file.write(image)


# get_pydot_graph's styles (pycaffe's).
LAYER_STYLE_DEFAULT = {"shape": "record", "fillcolor": "#6495ED", "style": "filled"}
NEURON_LAYER_STYLE = {"shape": "record", "fillcolor": "#90EE90", "style": "filled"}
BLOB_STYLE = {"shape": "octagon", "fillcolor": "#E0E0E0", "style": "filled"}


def _layer_style(layer):
    """Green for in-place neuron layers (one blob in and out), else coloured by type."""
    if len(layer.bottom) == 1 and list(layer.bottom) == list(layer.top):
        return NEURON_LAYER_STYLE
    return dict(LAYER_STYLE_DEFAULT, fillcolor=choose_color_by_layertype(layer.type))


def get_pydot_graph(caffe_net, rankdir, label_edges=True, phase=None, display_lrm=False):
    """pycaffe's pydot.Dot of the net: a node per layer (named "<layer>_<type>", labelled by
    get_layer_label, coloured by type, green when in place) and per blob ("<blob>_blob",
    an octagon), an edge from each bottom blob to its layer and from each layer to its top
    blobs (labelled by get_edge_label when label_edges). Rendering it (`.create()`, `.write_png`)
    needs Graphviz; `.to_string()` does not.

    Where we differ: pycaffe names each layer node by its label, and styles a blob node as an
    octagon only while some later layer reads it; here node names are the keys above and
    every blob is an octagon."""
    import pydot

    net = _prepare(caffe_net, phase)
    graph = pydot.Dot(caffe_net.name or "Net", graph_type="digraph", rankdir=rankdir)
    nodes, edges = {}, []
    for layer in net.layer:
        name = f"{layer.name}_{layer.type}"
        nodes[name] = pydot.Node(name, label=get_layer_label(layer, rankdir, display_lrm),
                                 **_layer_style(layer))
        top_label = get_edge_label(layer) if label_edges else '""'
        edges.extend((f"{blob}_blob", name, '""') for blob in layer.bottom)
        edges.extend((name, f"{blob}_blob", top_label) for blob in layer.top)
        for blob in [*layer.bottom, *layer.top]:
            nodes.setdefault(f"{blob}_blob", pydot.Node(f"{blob}_blob", label=blob, **BLOB_STYLE))
    for node in nodes.values():
        graph.add_node(node)
    for source, target, label in edges:
        graph.add_edge(pydot.Edge(source, target, label=label))
    return graph
