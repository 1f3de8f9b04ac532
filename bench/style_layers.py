"""Per-layer PyTorch CPU times of TransformerNet's convolutions at the shapes a 512×512 image gives
(batch 1, no_grad, 2 threads): the counterpart of `cargo run --release -p easel-models --example
style_bench`.

    /work/venv/bin/python bench/style_layers.py
"""
import time, statistics, torch, torch.nn.functional as F
torch.set_num_threads(2)
L=[("conv1",3,32,9,512),("conv2s2",32,64,3,512),("conv3s2",64,128,3,256),("res",128,128,3,128),("deconv1",128,64,3,256),("deconv2",64,32,3,512),("deconv3",32,3,9,512)]
tot=0
with torch.no_grad():
  for name,c,o,k,h in L:
    s=2 if name.endswith("s2") else 1
    x=torch.randn(1,c,h+k-1,h+k-1); w=torch.randn(o,c,k,k); b=torch.randn(o)
    F.conv2d(x,w,b,stride=s)
    t=[]
    for _ in range(5):
      t0=time.perf_counter(); F.conv2d(x,w,b,stride=s); t.append(time.perf_counter()-t0)
    m=statistics.median(t); oh=(h+k-1-k)//s+1
    fl=2*o*c*k*k*oh*oh/1e9
    print(f"{name:10s} {m*1000:8.1f} ms {fl/m:7.1f} GFLOP/s")
    tot+=m*(10 if name=="res" else 1)
  x=torch.randn(1,128,128,128)
  t=[];
  for _ in range(5):
    t0=time.perf_counter(); F.relu(F.instance_norm(x)); t.append(time.perf_counter()-t0)
  print("inorm+relu 128x128x128", statistics.median(t)*1000,"ms")
  x=torch.randn(1,128,128,128)
  t=[]
  for _ in range(5):
    t0=time.perf_counter(); F.pad(x,(1,1,1,1),mode="reflect"); t.append(time.perf_counter()-t0)
  print("reflpad 128^3", statistics.median(t)*1000,"ms")
print("conv total", tot*1000)
