"""Task data: reading files, tokenizing, batching, and sampling the tasks of each step."""

from mtbert.data.encoding import EncodedSet, collate, encode_examples, length_sorted_batches
from mtbert.data.files import Example, ReadResult, read_task_file
from mtbert.data.loading import DATA_HELP, TaskData, load_task_data
from mtbert.data.sampler import MultiTaskSampler
from mtbert.data.sampling import SAMPLING_STRATEGIES, samples_per_step

__all__ = ["DATA_HELP", "SAMPLING_STRATEGIES", "EncodedSet", "Example", "MultiTaskSampler", "ReadResult", "TaskData",
           "collate", "encode_examples", "length_sorted_batches", "load_task_data", "read_task_file",
           "samples_per_step"]
