"""ONNX operators that TensorRT 10's ONNX parser accepts (data for the export lint).

Source: ``docs/operators.md`` of the onnx/onnx-tensorrt repository (the ONNX-TensorRT parser's own
support matrix), in the version whose header reads "TensorRT 10.15 supports operators in the
inclusive range of opset 9 to opset 24". :data:`TRT10_SUPPORTED_OPS` lists every operator marked
``Y`` in its "Operator Support Matrix"; :data:`TRT10_UNSUPPORTED_OPS` every one marked ``N``.
Operators in neither set are not mentioned by that document at all.

Caveats:
    * The matrix is for TensorRT 10.15. Earlier 10.x parsers support fewer operators and opsets
      (TensorRT 10.0's header states opset 9 to 20), so an engine for an older 10.x (e.g. a JetPack
      device) should keep the opset at 20 or below; the exporter's default (17) is inside both ranges.
    * ``Y`` does not mean "every attribute / dtype": the document's "Restrictions" column still
      applies. Of those, the lint checks the ones this project's graph can hit (TopK, see
      :data:`TRT10_TOPK_MAX_K`). It also notes that DOUBLE has only limited support (cast down to
      FLOAT) and that UINT8 is supported only as a network input or output type.
"""

from __future__ import annotations

#: TensorRT version stated in the header of the transcribed operators.md.
TRT_DOC_VERSION = "10.15"
#: Lowest opset that header states.
TRT_MIN_OPSET = 9
#: Highest opset that header states ("inclusive range of opset 9 to opset 24").
TRT_MAX_OPSET = 24

#: Restriction of ``TopK`` in that matrix: "`K` input must be less than 3840" (so K <= 3839).
TRT10_TOPK_MAX_K = 3839

#: Operators marked ``Y`` (supported) in the TensorRT 10.15 support matrix.
TRT10_SUPPORTED_OPS: frozenset[str] = frozenset({
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh",
    "Attention", "AveragePool",
    "BatchNormalization", "BlackmanWindow",
    "Cast", "CastLike", "Ceil", "Celu", "Clip", "Concat", "Constant", "ConstantOfShape", "Conv",
    "ConvTranspose", "Cos", "Cosh", "CumSum",
    "DeformConv", "DepthToSpace", "DequantizeLinear", "Div", "Dropout",
    "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand", "EyeLike",
    "Flatten", "Floor",
    "Gather", "GatherElements", "GatherND", "Gelu", "Gemm", "GlobalAveragePool", "GlobalLpPool",
    "GlobalMaxPool", "Greater", "GreaterOrEqual", "GridSample", "GroupNormalization", "GRU",
    "HammingWindow", "HannWindow", "HardSigmoid", "HardSwish", "Hardmax",
    "Identity", "If", "ImageScaler", "InstanceNormalization", "IsInf", "IsNaN",
    "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax", "Loop", "LRN",
    "LSTM", "LpNormalization", "LpPool",
    "MatMul", "Max", "MaxPool", "Mean", "MeanVarianceNormalization", "Min", "Mish", "Mod", "Mul",
    "Neg", "NonMaxSuppression", "NonZero", "Not",
    "OneHot", "Or",
    "Pad", "ParametricSoftplus", "Pow", "PRelu",
    "QuantizeLinear",
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Range", "Reciprocal",
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
    "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "Resize", "ReverseSequence",
    "RMSNormalization", "RNN", "RoiAlign", "RotaryEmbedding", "Round",
    "STFT", "ScaledTanh", "Scan", "Scatter", "ScatterElements", "ScatterND", "Selu", "Shape", "Shrink",
    "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Slice", "Softmax", "Softplus", "Softsign",
    "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum",
    "Tan", "Tanh", "TensorScatter", "ThresholdedRelu", "Tile", "TopK", "Transpose", "Trilu",
    "Unsqueeze", "Upsample",
    "Where",
    "Xor",
})

#: Operators marked ``N`` (not supported) in the same matrix.
TRT10_UNSUPPORTED_OPS: frozenset[str] = frozenset({
    "AffineGrid",
    "Bernoulli", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor",
    "Col2Im", "CenterCropPad", "Compress", "ConcatFromSequence", "ConvInteger",
    "DFT", "Det", "DynamicQuantizeLinear",
    "ImageDecoder",
    "MatMulInteger", "MaxRoiPool", "MaxUnpool", "MelWeightMatrix", "Multinomial",
    "NegativeLogLikelihoodLoss",
    "Optional", "OptionalGetElement", "OptionalHasElement",
    "QLinearConv", "QLinearMatMul",
    "RegexFullMatch",
    "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert",
    "SequenceLength", "SequenceMap", "SoftmaxCrossEntropyLoss", "SplitToSequence", "StringConcat",
    "StringNormalizer", "StringSplit",
    "TfIdfVectorizer",
    "Unique",
})

__all__ = [
    "TRT10_SUPPORTED_OPS",
    "TRT10_TOPK_MAX_K",
    "TRT10_UNSUPPORTED_OPS",
    "TRT_DOC_VERSION",
    "TRT_MAX_OPSET",
    "TRT_MIN_OPSET",
]
