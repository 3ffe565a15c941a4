"""crnn.pytorch's network (meijieru/crnn.pytorch models/crnn.py), written from its published
definition for the tests that compare fastcrnn's CRNN with it: its module names, so its
state_dict keys are crnn.pytorch's."""

from torch import nn

FULL_WIDTHS = (64, 128, 256, 256, 512, 512, 512)


class ReferenceBidirectionalLSTM(nn.Module):
    """crnn.pytorch's BidirectionalLSTM: nn.LSTM (bidirectional) then a Linear per frame."""

    def __init__(self, n_in, n_hidden, n_out):
        super().__init__()
        self.rnn = nn.LSTM(n_in, n_hidden, bidirectional=True)
        self.embedding = nn.Linear(n_hidden * 2, n_out)

    def forward(self, x):
        recurrent, _ = self.rnn(x)
        steps, batch, hidden = recurrent.shape
        return self.embedding(recurrent.reshape(steps * batch, hidden)).reshape(steps, batch, -1)


class ReferenceCRNN(nn.Module):
    """crnn.pytorch's CRNN(imgH, nc, nclass, nh, leakyRelu): seven convolutions (3x3 pad 1, the
    last 2x2 pad 0), BatchNorm after conv2/4/6, pools 2x2, 2x2, (2,2)/(2,1)/(0,1) twice, then
    two BidirectionalLSTMs; raw scores out. ``widths`` narrows the convolutions for speed (the
    structure and the key names stay crnn.pytorch's)."""

    def __init__(self, imgH, nc, nclass, nh, leaky_relu=False, widths=FULL_WIDTHS):
        super().__init__()
        assert imgH % 16 == 0
        kernels, pads = [3, 3, 3, 3, 3, 3, 2], [1, 1, 1, 1, 1, 1, 0]
        cnn = nn.Sequential()

        def conv_relu(i, batch_norm=False):
            n_in = nc if i == 0 else widths[i - 1]
            cnn.add_module(f"conv{i}", nn.Conv2d(n_in, widths[i], kernels[i], 1, pads[i]))
            if batch_norm:
                cnn.add_module(f"batchnorm{i}", nn.BatchNorm2d(widths[i]))
            act = nn.LeakyReLU(0.2, inplace=True) if leaky_relu else nn.ReLU(True)
            cnn.add_module(f"relu{i}", act)

        conv_relu(0)
        cnn.add_module("pooling0", nn.MaxPool2d(2, 2))
        conv_relu(1)
        cnn.add_module("pooling1", nn.MaxPool2d(2, 2))
        conv_relu(2, True)
        conv_relu(3)
        cnn.add_module("pooling2", nn.MaxPool2d((2, 2), (2, 1), (0, 1)))
        conv_relu(4, True)
        conv_relu(5)
        cnn.add_module("pooling3", nn.MaxPool2d((2, 2), (2, 1), (0, 1)))
        conv_relu(6, True)
        self.cnn = cnn
        self.rnn = nn.Sequential(
            ReferenceBidirectionalLSTM(widths[6], nh, nh),
            ReferenceBidirectionalLSTM(nh, nh, nclass),
        )

    def forward(self, x):
        conv = self.cnn(x)
        assert conv.shape[2] == 1
        return self.rnn(conv.squeeze(2).permute(2, 0, 1))
