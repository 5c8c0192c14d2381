"""The preset dictionary of a version-3 .dsz header (docs/FORMAT.md §2.1 and Appendix A).

A .dsz header is JSON whose field names repeat in every file: the tensor records, the ModelInfo
record and its ``train`` and ``compress`` history entries. zlib (RFC 1950) lets both sides agree on
a *preset dictionary*: text DEFLATE may copy from as if it came before the data, so a field name
found in the dictionary costs one short back reference. ``HEADER_DICT`` is such a sample of what
this writer produces, rarer text first (a copy from near its end is cheaper). It is part of the
format: a change to one byte makes every version-3 file unreadable, so its size and checksums are
fixed below and checked on import.
"""

from __future__ import annotations

import zlib

__all__ = ["DICT_LINES", "HEADER_DICT", "HEADER_DICT_SIZE", "HEADER_DICT_ADLER32", "HEADER_DICT_CRC32"]

DICT_LINES = (
    # records of other stages a model may carry into `compress`
    '{"op":"distill","config":{"loss":"kl","temperature":4.0,"alpha":0.9,"features":[],"feature_loss":"l2",',
    '"feature_weight":1.0,"cache":true},"teacher":"',
    '{"op":"prune","config":{"sparsity":0.9,"include":[],"exclude":[],"rule":null,"scope":"layer",',
    '"schedule":null,"epochs":10,"rounds":3,"agp_fraction":0.7,"lr":0.01,"weight_decay":0.0005,',
    '"optimizer":"sgd","warmup_epochs":0.0,"calibration":1024,"batch_size":128,"augment":true,"penalty":null,',
    '"penalty_lambda":1e-05,"distill":false,"kd_temperature":4.0,"kd_alpha":0.9,"adjust_dropout":false,',
    '"remove_dead":false,"seed":0,"progress":true,"verbose":true},"sparsity":0.',
    # zoo architectures, data and layer names
    '"arch":"mobilenetv2","arch":"resnet20","arch":"vgg","arch":"lenet300","arch":"lenet5",',
    '"kwargs":{"num_classes":10,"in_features":784},"kwargs":{"num_classes":10,"in_channels":1},',
    '"data":"cifar10","data":"mnist","data":"fashion-mnist","input_shape":[3,32,32],',
    '"stem.0.weight","blocks.0.block.0.0.weight","head.0.weight","classifier.0.weight","features.0.weight",',
    '"layer1.0.conv1.weight","layer1.0.bn1.weight","bn1.running_mean","bn1.running_var",',
    '"bn1.num_batches_tracked","dtype":"int64","shape":[],"kind":"raw","fc.weight",',
    # the model record: trained, then compressed
    '{"format":"deepshrink-model","version":1,"arch":"","kwargs":{},"input_shape":[1,28,28],"mean":[0.',
    '],"std":[0.',
    '],"accuracy":0.',
    ',"data":"","history":[{"op":"train","config":{"epochs":10,"batch_size":128,"optimizer":"sgd",',
    '"lr":0.05,"momentum":0.9,"weight_decay":0.0005,"schedule":"cosine","warmup_epochs":0.0,',
    '"label_smoothing":0.0,"augment":true,"seed":0,"channels_last":true,"eval_every":1,"checkpoint":null,',
    '"checkpoint_every":0,"progress":false,"verbose":true},"seconds":',
    ',"accuracy":0.',
    ',"threads":2},{"op":"compress","config":{"max_drop":0.5,"sparsity":0.92,"allocation":"sensitivity",',
    '"rule":null,"include":[],"exclude":[],"val_size":null,"prune_epochs":10,"prune_lr":null,',
    '"weight_decay":null,"conv_bits":8,"fc_bits":5,"embedding_bits":0,"bits":{},"centroid_epochs":1,',
    '"centroid_lr":0.0001,"distill":false,"kd_temperature":4.0,"kd_alpha":0.9,"attempts":2,"backoff":0.02,',
    '"augment":null,"seed":0,"progress":false,"verbose":true},"accuracy_before":0.',
    ',"accuracy_after":0.',
    ',"accuracy_on":"the test split (10000 images)","val_accuracy_before":0.',
    ',"val_accuracy_after":0.',
    ',"val_on":"the validation split (5000 images held out of the training split)",',
    '"budget_on":"validation","bits":{"conv1":8,"fc1":5,"fc2":5},"layers":{"conv2.weight":0.',
    ',"fc1.weight":0.',
    '},"scan_on":"the validation split (5000 images held out of the training split)","seconds":',
    ',"within_budget":true,"metric":"accuracy","attempts":1,"accuracy":0.',
    '}],"extra":{}}',
    # the tensor records
    '{"format":"deepshrink-dsz","version":3,"data_size":',
    ',"model":',
    ',"tensors":[{"name":"conv1.weight","dtype":"float32","shape":[',
    '],"kind":"quantized","codebook":{"dtype":"float32","shape":[',
    ']},"bits":8,"layout":"csr","index_bits":null,"nnz":',
    ']},"bits":8,"layout":"bitmap","index_bits":null,"nnz":',
    '],"kind":"quantized","codebook":{"dtype":"float16","shape":[',
    ']},"bits":5,"layout":"relative","index_bits":',
    ',"nnz":',
    ',"entries":',
    ',"plain":{"index_bits":',
    ',"bits":',
    '},"sections":{"codebook":{"offset":',
    ',"length":',
    ',"crc32":',
    ',"coder":"bytes","count":',
    ',"alphabet":256},"rows":{"offset":',
    ',"coder":"raw","count":',
    '},"cols":{"offset":',
    ',"coder":"const","count":',
    ',"alphabet":2},"mask":{"offset":',
    ',"coder":"adaptive","count":',
    ',"alphabet":2},"codes":{"offset":',
    ',"coder":"huffman","count":',
    '},"index":{"offset":',
    ',"coder":"ans","count":',
    '},"codes":{"offset":',
    ',"coder":"ans","count":',
    ',"alphabet":',
    '}}},{"name":"conv1.bias","dtype":"float32","shape":[',
    '],"kind":"raw","sections":{"data":{"offset":',
    ',"length":',
    ',"crc32":',
    ',"coder":"zlib","count":',
    ',"coder":"bytes","count":',
    ',"alphabet":256}}},{"name":"conv1.weight_mask","dtype":"bool","shape":[',
    '],"kind":"mask","source":"conv1.weight","sections":{}},{"name":"fc1.weight","dtype":"float32","shape":[',
)

HEADER_DICT = "".join(DICT_LINES).encode("ascii")
HEADER_DICT_SIZE = 3711
HEADER_DICT_ADLER32 = 0xDB77C657
HEADER_DICT_CRC32 = 0x05A1A924

if (len(HEADER_DICT), zlib.adler32(HEADER_DICT), zlib.crc32(HEADER_DICT)) != (
        HEADER_DICT_SIZE, HEADER_DICT_ADLER32, HEADER_DICT_CRC32):          # pragma: no cover
    raise ImportError("deepshrink/codec/header_dict.py: the .dsz header dictionary was changed; it is part "
                      "of the file format (docs/FORMAT.md Appendix A) and must stay byte for byte")
