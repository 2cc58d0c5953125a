"""The semi-global dictionary: per class, the most recent `d_size` embeddings (FIFO).

Storage is preallocated on the training device: `emb` [capacity, dim] and `labels`
[capacity]. Rows 0..len-1 are always the valid entries, so `tensors()` is a view with no copy
or concatenation. Bookkeeping (which rows belong to which class, in which order) lives in small
host-side structures and costs O(batch) per push. When the capacity is reached, whole classes
are evicted, least recently pushed first, and the last rows are moved into their place; when
every stored class is in the incoming batch, its largest classes give up their oldest entries.
"""
from collections import OrderedDict

import torch

from common.errors import InputError

DEFAULT_CAPACITY = 100_000  # rows; the trainers pass classes x d_size unless --dict_capacity


class SemiGlobalDictionary:

    def __init__(self, d_size, dim, capacity=None, device='cpu'):
        if d_size < 1:
            raise InputError(f'--d_size must be at least 1, got {d_size}')
        self.d_size = int(d_size)
        self.dim = int(dim)
        self.capacity = int(capacity or DEFAULT_CAPACITY)
        if self.capacity < self.d_size:
            raise InputError(f'dictionary capacity {self.capacity} is smaller than --d_size '
                             f'{self.d_size}')
        self.emb = torch.zeros(self.capacity, self.dim, device=device)
        self.labels = torch.full((self.capacity,), -1, dtype=torch.long, device=device)
        self._clear_bookkeeping()

    def _clear_bookkeeping(self):
        self.size = 0
        self._rows = OrderedDict()  # label -> its rows, oldest first; order = least recent first
        self._row_label = []  # host mirror of labels[:size]
        self._awaiting_first_row = set()  # during a push: new classes not yet given a row

    @property
    def device(self):
        return self.emb.device

    @property
    def num_classes(self):
        return len(self._rows)

    def __len__(self):
        return self.size

    def tensors(self):
        """(emb [M, dim], labels [M]): views of the stored rows."""
        return self.emb[:self.size], self.labels[:self.size]

    def class_entries(self, label):
        """The stored embeddings of one class, oldest first."""
        rows = self._rows.get(int(label), [])
        return self.emb[torch.tensor(rows, dtype=torch.long, device=self.device)]

    @torch.no_grad()
    def push(self, emb, labels):
        """Store a batch (emb [B, dim], labels [B]; labels preferably on the CPU, which avoids a
        device synchronisation). Each class keeps its newest d_size entries."""
        label_list = [int(label) for label in labels.tolist()]
        self._make_room(label_list)
        self._awaiting_first_row = {label for label in label_list if label not in self._rows}
        last_position_of_row = {}
        for position, label in enumerate(label_list):
            last_position_of_row[self._row_for(label)] = position
        rows = list(last_position_of_row)
        positions = list(last_position_of_row.values())
        rows, positions, row_labels = self._index_tensors(
            rows, positions, [label_list[position] for position in positions])
        self.emb.index_copy_(0, rows, emb.detach()[positions.to(emb.device)].to(self.emb))
        self.labels.index_copy_(0, rows, row_labels)

    def _index_tensors(self, *lists):
        """Host lists of ints as long tensors on the dictionary's device. On CUDA they travel in
        one pinned, non-blocking copy, so a push never waits for the GPU."""
        packed = torch.tensor(lists, dtype=torch.long)
        if self.device.type == 'cuda':
            packed = packed.pin_memory().to(self.device, non_blocking=True)
        return packed.unbind(0)

    def _row_for(self, label):
        """The row the next entry of `label` goes to: a new row while the class has fewer than
        d_size and space is left (keeping one free row for each class of the batch not yet
        stored), else the class's oldest row."""
        fifo = self._rows.setdefault(label, [])
        self._rows.move_to_end(label)
        self._awaiting_first_row.discard(label)
        free = self.capacity - self.size - len(self._awaiting_first_row)
        if len(fifo) < self.d_size and free > 0:
            row = self.size
            self.size += 1
            self._row_label.append(label)
        else:
            row = fifo.pop(0)
        fifo.append(row)
        return row

    def _make_room(self, batch_labels):
        """Free rows before a push: evict least recently pushed classes not in the batch until
        the batch's new entries fit (or nothing else can go); if the batch's new classes still
        lack a row each, drop the oldest entries of the batch's largest stored classes."""
        counts = {}
        for label in batch_labels:
            counts[label] = counts.get(label, 0) + 1
        if len(counts) > self.capacity:
            raise InputError(f'the dictionary capacity ({self.capacity} rows, --dict_capacity) '
                             f'cannot hold one batch of {len(counts)} classes')
        needed = sum(min(count, self.d_size - len(self._rows.get(label, ())))
                     for label, count in counts.items())
        if self.capacity - self.size < needed:  # rare: only then walk the classes
            evictable = [label for label in self._rows if label not in counts]
            while self.capacity - self.size < needed and evictable:
                self._drop_oldest(evictable.pop(0))
        new_classes = sum(label not in self._rows for label in counts)
        while self.capacity - self.size < new_classes:  # every stored class is in the batch
            largest = max((label for label in counts if label in self._rows),
                          key=lambda label: len(self._rows[label]))
            self._drop_oldest(largest, 1)

    def _drop_oldest(self, label, count=None):
        """Remove the oldest `count` entries of a class (all: evict it) and close the gap by
        moving the last rows into the freed ones, so rows 0..size-1 stay the valid ones."""
        fifo = self._rows[label]
        count = len(fifo) if count is None else count
        freed = sorted(fifo[:count])
        if count == len(fifo):
            del self._rows[label]
        else:
            del fifo[:count]
        new_size = self.size - len(freed)
        holes = [row for row in freed if row < new_size]
        freed_set = set(freed)
        movers = [row for row in range(new_size, self.size) if row not in freed_set]
        for hole, mover in zip(holes, movers):
            owner = self._row_label[mover]
            owner_fifo = self._rows[owner]
            owner_fifo[owner_fifo.index(mover)] = hole
            self._row_label[hole] = owner
        if holes:
            holes_t, movers_t = self._index_tensors(holes, movers)
            self.emb[holes_t] = self.emb[movers_t]
            self.labels[holes_t] = self.labels[movers_t]
        del self._row_label[new_size:]
        self.size = new_size

    def state_dict(self):
        return {
            'd_size': self.d_size, 'dim': self.dim, 'capacity': self.capacity,
            'emb': self.emb[:self.size].cpu().clone(), 'labels': self.labels[:self.size].cpu(),
            'rows': [(label, list(rows)) for label, rows in self._rows.items()],
        }

    def load_state_dict(self, state):
        if state['dim'] != self.dim or state['d_size'] != self.d_size:
            raise InputError(f'the saved dictionary has dim {state["dim"]} and d_size '
                             f'{state["d_size"]}, this run uses dim {self.dim} and d_size '
                             f'{self.d_size} (--dim, --d_size)')
        size = len(state['labels'])
        if size > self.capacity:
            raise InputError(f'the saved dictionary holds {size} rows, more than this run\'s '
                             f'capacity {self.capacity} (--dict_capacity)')
        self._clear_bookkeeping()
        self.emb[:size] = state['emb'].to(self.emb)
        self.labels[:size] = state['labels'].to(self.device)
        self.size = size
        self._row_label = [-1] * size
        for label, rows in state['rows']:
            self._rows[label] = list(rows)
            for row in rows:
                self._row_label[row] = label
