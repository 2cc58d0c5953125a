"""The semi-global dictionary: per class, the most recent `d_size` embeddings (FIFO).

Storage is preallocated on the training device: `emb` [capacity, dim] and `labels`
[capacity]. Rows 0..len-1 are always the valid entries, so `tensors()` is a view with no copy
or concatenation. Bookkeeping (which rows belong to which class, in which order) lives in small
host-side structures and costs O(batch) per push. When the capacity is reached, whole classes
are evicted, least recently pushed first, and the last rows are moved into their place.
"""
from collections import OrderedDict

import torch

from utils.errors import InputError

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
        last_position_of_row = {}
        for position, label in enumerate(label_list):
            last_position_of_row[self._row_for(label)] = position
        rows = torch.tensor(list(last_position_of_row), dtype=torch.long)
        positions = torch.tensor(list(last_position_of_row.values()), dtype=torch.long)
        rows, positions = rows.to(self.device), positions.to(emb.device)
        self.emb.index_copy_(0, rows, emb.detach()[positions].to(self.emb))
        self.labels.index_copy_(0, rows, labels.to(self.device)[positions.to(self.device)])

    def _row_for(self, label):
        """The row the next entry of `label` goes to: a new row while the class has fewer than
        d_size and space is left, else the class's oldest row."""
        fifo = self._rows.setdefault(label, [])
        self._rows.move_to_end(label)
        if len(fifo) < self.d_size and self.size < self.capacity:
            row = self.size
            self.size += 1
            self._row_label.append(label)
        else:
            row = fifo.pop(0)
        fifo.append(row)
        return row

    def _make_room(self, batch_labels):
        """Evict least recently pushed classes not in the batch until the batch's new entries
        fit (or nothing else can go)."""
        counts = {}
        for label in batch_labels:
            counts[label] = counts.get(label, 0) + 1
        needed = sum(min(count, self.d_size - len(self._rows.get(label, ())))
                     for label, count in counts.items())
        if self.capacity - self.size < needed:  # rare: only then walk the classes
            evictable = [label for label in self._rows if label not in counts]
            while self.capacity - self.size < needed and evictable:
                self._evict(evictable.pop(0))
        new_classes = sum(label not in self._rows for label in counts)
        if self.capacity - self.size < new_classes:
            raise InputError(f'the dictionary capacity ({self.capacity} rows, --dict_capacity) '
                             f'cannot hold one batch of {len(counts)} classes')

    def _evict(self, label):
        freed = sorted(self._rows.pop(label))
        new_size = self.size - len(freed)
        holes = [row for row in freed if row < new_size]
        freed_set = set(freed)
        movers = [row for row in range(new_size, self.size) if row not in freed_set]
        for hole, mover in zip(holes, movers):
            owner = self._row_label[mover]
            fifo = self._rows[owner]
            fifo[fifo.index(mover)] = hole
            self._row_label[hole] = owner
        if holes:
            holes_t = torch.tensor(holes, device=self.device)
            movers_t = torch.tensor(movers, device=self.device)
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
