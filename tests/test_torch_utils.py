"""unwrap_model: the one way to reach the bare model through DataParallel/DDP and torch.compile wrappers."""

from __future__ import annotations

import torch
from torch import nn

from build_utils.torch_utils import unwrap_model


def test_unwrap_model_peels_every_wrapper() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert unwrap_model(net) is net
    assert unwrap_model(nn.DataParallel(net)) is net
    compiled = torch.compile(net)  # an OptimizedModule; nothing is compiled until it is called
    assert compiled is not net and unwrap_model(compiled) is net
    assert unwrap_model(torch.compile(nn.DataParallel(net))) is net  # nested wrappers
    assert set(unwrap_model(compiled).state_dict()) == {"0.weight", "0.bias", "1.weight", "1.bias",
                                                        "1.running_mean", "1.running_var",
                                                        "1.num_batches_tracked"}  # no prefixes


def test_unwrap_model_keeps_a_bare_model_with_a_module_attribute() -> None:
    class Holder(nn.Module):  # a model that merely owns a submodule called `module` is not a wrapper
        def __init__(self) -> None:
            super().__init__()
            self.module = nn.Linear(2, 2)

    holder = Holder()
    assert unwrap_model(holder) is holder
