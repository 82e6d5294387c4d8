"""The tiny models' one departure from stock diffusers.

HunyuanImageByT5TextProjection hard-codes a 2048-wide hidden layer
(`HunyuanImageByT5TextProjection(text_embed_2_dim, 2048, inner_dim)` inside
HunyuanImageTransformer2DModel). At that width the ByT5 projection alone is
4.4 M parameters, far more than the rest of a tiny test model. Importing this
module narrows that width to TINY_BYT5_HIDDEN for models built or loaded in
this process; the computation is otherwise diffusers' own code. sdc reads the
width from the weight shapes, so it runs both the real 2048 and this one.
"""

import diffusers.models.transformers.transformer_hunyuanimage as _th

TINY_BYT5_HIDDEN = 64
_orig_init = _th.HunyuanImageByT5TextProjection.__init__


def _narrow_init(self, in_features, hidden_size, out_features):
    _orig_init(self, in_features, TINY_BYT5_HIDDEN, out_features)


_th.HunyuanImageByT5TextProjection.__init__ = _narrow_init
