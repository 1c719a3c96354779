"""DummyData: tops filled by fillers (constant zeros by default), for tests and placeholders."""
from . import register_layer
from .base import BaseLayer
from .. import mode
from ..fillers import fill


@register_layer("DummyData")
class DummyDataLayer(BaseLayer):
    """Tops of fixed shapes filled by weight fillers.

    Parameters: dummy_data_param.shape (one, or one per top) or the legacy num/channels/height/width (each one, or one per top); data_filler (none: constant 0; one for all tops; or one per top).
    Forward: constant-filled tops keep the values they got once (and whatever the user wrote since); other tops are refilled by their filler at every forward.
    Backward: none.
    """

    bottom_count = (0, 0)
    reads_data = True
    top_count = (1, None)

    def setup(self, bottom_shapes):
        param = self.param.dummy_data_param
        tops = len(self.param.top)
        fillers = list(param.data_filler)
        if len(fillers) not in (0, 1, tops):
            raise self.error(f"dummy_data_param gives {len(fillers)} data_filler for {tops} tops: "
                             "give none (zeros), one for all, or one per top")
        legacy = {name: list(getattr(param, name))
                  for name in ("num", "channels", "height", "width")}
        if any(legacy.values()):
            if len(param.shape):
                raise self.error("give either dummy_data_param.shape or the legacy "
                                 "num/channels/height/width, not both")
            for name, values in legacy.items():
                if len(values) not in (1, tops):
                    raise self.error(f"dummy_data_param gives {len(values)} {name} values for "
                                     f"{tops} tops: give one, or one per top")
            self.shapes = [tuple(int(values[0 if len(values) == 1 else i])
                                 for values in legacy.values()) for i in range(tops)]
        else:
            if len(param.shape) not in (1, tops):
                raise self.error(f"dummy_data_param gives {len(param.shape)} shapes for {tops} "
                                 "tops: give one, or one per top")
            self.shapes = [tuple(int(d) for d in param.shape[0 if len(param.shape) == 1 else i].dim)
                           for i in range(tops)]
        for shape in self.shapes:
            if any(d < 0 for d in shape):
                raise self.error(f"negative dimension in shape {shape}")
        if not fillers:
            from ..proto import caffe_pb2
            fillers = [caffe_pb2.FillerParameter(type="constant", value=0.0)]
        self.fillers = [fillers[0 if len(fillers) == 1 else i] for i in range(tops)]
        self.refill = [f.type != "constant" for f in self.fillers]
        self.filled = [False] * tops

    def reshape(self, bottom_shapes):
        return list(self.shapes)

    def forward(self, bottoms):
        device = mode.device()
        tops = []
        for i, (shape, filler) in enumerate(zip(self.shapes, self.fillers)):
            if self.filled[i] and not self.refill[i]:
                tops.append(None)  # a constant top keeps its values, as Caffe fills it only once
            else:
                tops.append(fill(filler, shape).to(device))
                self.filled[i] = True
        return tops
