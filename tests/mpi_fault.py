"""train.py with a fault injected on one rank at one step, for tests/test_distributed.py.

    mpiexec -n R python tests/mpi_fault.py raise|kill RANK STEP [train.py options]

``raise``: that rank raises RuntimeError("injected fault") at the start of step STEP;
``kill``: it sends itself SIGKILL there (a death no handler can see).
"""
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import train                               # noqa: E402  (after the path is set)
from alexnet_np.train import trainer             # noqa: E402

MODE, RANK, STEP = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
THIS_RANK = int(os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0")))
forward = trainer.Trainer.forward


def faulty_forward(self, images, labels):
    if THIS_RANK == RANK and self.step == STEP:
        if MODE == "raise":
            raise RuntimeError("injected fault")
        os.kill(os.getpid(), signal.SIGKILL)
    return forward(self, images, labels)


trainer.Trainer.forward = faulty_forward
sys.exit(train.main(sys.argv[4:]))
