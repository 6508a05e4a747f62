"""bench/'s FLOP counter against a hand count (benchmarks themselves are never timed in tests)."""
from __future__ import annotations

from bench import flops
from bench.flops import Layer
from transferlab.models import networks


def test_a_tiny_network_with_its_lowest_layer_frozen_counts_as_by_hand() -> None:
    # 5 -> 4 (frozen) -> 3 -> 2: multiply-adds 20, 12, 6 per example
    layers = [Layer(5, 4, False), Layer(4, 3, True), Layer(3, 2, True)]
    counted = flops.epoch_flops(layers, train_rows=10, val_rows=3)
    assert counted.forward == 2 * (20 + 12 + 6) * 10  # every layer runs forward
    # weight gradients of the two trained layers; an input gradient only for the top one (the lowest trained
    # layer's input gradient is never needed, and the frozen layer below it gets nothing)
    assert counted.backward == (2 * 12 + 2 * 6 + 2 * 6) * 10
    assert counted.validation == 2 * 38 * 3
    assert counted.total == 760 + 480 + 228


def test_every_layer_trained_skips_only_the_first_input_gradient() -> None:
    layers = [Layer(5, 4, True), Layer(4, 3, True), Layer(3, 2, True)]
    assert flops.epoch_flops(layers, 1, 0).backward == 2 * 38 + 2 * (12 + 6)


def test_a_fixed_layer_above_a_trained_one_passes_the_gradient_down_but_learns_nothing() -> None:
    layers = [Layer(5, 4, True), Layer(4, 3, False), Layer(3, 2, True)]
    assert flops.epoch_flops(layers, 1, 0).backward == (2 * 20 + 2 * 6) + 2 * (12 + 6)


def test_the_layers_are_read_from_the_keras_model_actually_trained() -> None:
    model = networks.build(784, networks.dnn_layers([300, 50, 50, 50, 50], "relu", 5), "he_normal", 0)
    networks.freeze(model, [1, 2])
    layers = flops.model_layers(model)
    assert [(x.inputs, x.units, x.trained) for x in layers] == [
        (784, 300, False), (300, 50, False), (50, 50, True), (50, 50, True), (50, 50, True), (50, 5, True)]
    # the DNN5 fully trained on 400 + 100 rows: 257,950 multiply-adds per example
    full = flops.epoch_flops([Layer(x.inputs, x.units, True) for x in layers], 400, 100)
    assert full.total == 2 * 257_950 * 400 * 2 + 2 * (257_950 - 784 * 300) * 400 + 2 * 257_950 * 100 == 482_510_000
    assert flops.cache_flops(layers, 2, 1500) == 2 * (784 * 300 + 300 * 50) * 1500


def test_a_cnn_counts_its_convolutions_from_kernel_and_output_shape() -> None:
    import keras

    from transferlab.config import NetworkSpec
    from transferlab.models import architectures

    cnn = architectures.source_network(NetworkSpec(conv=[8, 16], hidden_units=[32]), (28, 28, 1), 5, 0)
    cnn.get_layer("conv1").trainable = False
    layers = flops.model_layers(cnn)
    # conv1, stride 2: 14x14 positions x 3x3 x 1 -> 8; conv2, stride 2: 7x7 x 3x3 x 8 -> 16; then 16 -> 32 -> 5
    assert [(x.name, x.multiply_adds, x.trained) for x in layers] == [
        ("conv1", 196 * 9 * 8, False), ("conv2", 49 * 9 * 8 * 16, True), ("hidden1", 16 * 32, True), ("outputs", 32 * 5, True)]
    counted = flops.epoch_flops(layers, 10, 2)  # conv2 is the lowest trained layer: no input gradient of its own
    assert counted.backward == 2 * (56_448 + 512 + 160 + 512 + 160) * 10
    image = keras.Input((28, 28, 3))
    x = keras.layers.SeparableConv2D(8, 3, padding="same", depth_multiplier=2)(image)
    x = keras.layers.DepthwiseConv2D(3, strides=2)(x)
    x = keras.layers.Conv2D(8, 3, groups=4)(x)
    x = keras.layers.Dense(4)(x)
    assert [x.multiply_adds for x in flops.model_layers(keras.Model(image, x))] == [
        784 * 9 * 3 * 2, 784 * 6 * 8,  # separable: depthwise (3 channels x 2), then pointwise 6 -> 8
        169 * 9 * 8,  # depthwise, stride 2: 13 x 13 positions, one 3x3 filter per channel
        121 * 9 * 2 * 8,  # 4 groups: each filter sees 8 / 4 channels
        121 * 8 * 4]  # a Dense layer on an 11 x 11 x 8 image, per position
