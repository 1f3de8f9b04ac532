"""Reference numbers for easel-nn's `ops::tests::batch_norm_matches_pytorch`.

nn.BatchNorm2d(3) in training mode, float64, on a deterministic input x[b, c, h, w] (B=2, C=3,
H=2, W=3; x_i = sin(1 + 0.7 i)·(c + 1) + c with c the channel of flat index i), weight
[0.5, 1.5, -1], bias [0.1, -0.2, 0.3], loss Σ y·cos(0.3 i). Prints x, y, ∂x, ∂weight, ∂bias and
the running statistics after the step (momentum 0.1, unbiased variance). Run with PyTorch ≥ 2:

    python crates/nn/scripts/batch_norm_reference.py
"""
import torch, math
torch.set_default_dtype(torch.float64)
B,C,H,W=2,3,2,3
n=B*C*H*W
x=torch.tensor([math.sin(1+i*0.7)*((i//(H*W))%C+1)+((i//(H*W))%C) for i in range(n)]).reshape(B,C,H,W).requires_grad_()
bn=torch.nn.BatchNorm2d(C)
with torch.no_grad():
    bn.weight.copy_(torch.tensor([0.5,1.5,-1.0])); bn.bias.copy_(torch.tensor([0.1,-0.2,0.3]))
bn.train()
y=bn(x)
w=torch.tensor([math.cos(i*0.3) for i in range(n)]).reshape(B,C,H,W)
(y*w).sum().backward()
f=lambda t: ", ".join(f"{v:.12e}" for v in t.detach().flatten().tolist())
print("x", f(x)); print("y", f(y)); print("dx", f(x.grad)); print("dg", f(bn.weight.grad)); print("db", f(bn.bias.grad)); print("rm", f(bn.running_mean)); print("rv", f(bn.running_var))
