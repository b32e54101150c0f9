"""The fleet: every scale set and instance the emulator holds, the loopback addresses they use, and
the one lock that guards all ARM-visible state.

**One lock, short critical sections.** Slow work (an instance applying a model through its runtime,
which for nginx means running a script; starting or stopping a runtime) happens *outside* the lock;
the lock is re-taken only to publish the result. So a VM list is never blocked behind an upgrade.

**Addresses.** Each instance gets a loopback address 127.0.X.Y (from ``address_base``) unique within
the emulator; if a runtime cannot bind its address (someone else's test holds it), the next address
is tried.
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading
from concurrent.futures import ThreadPoolExecutor

from emulator.arm.model import VM_TYPE, VMSS_TYPE, ArmError, Instance, ScaleSet
from emulator.clock import REAL_TIME, Clock


class Fleet:
    def __init__(self, address_base: str = "127.0.10.1", clock: Clock = REAL_TIME) -> None:
        self.lock = threading.RLock()
        self.clock = clock  # the emulator's clock: real time, or one that skips idle time (emulator/clock.py)
        self._scale_sets: dict[tuple[str, str], ScaleSet] = {}
        self._next_address = int(ipaddress.IPv4Address(address_base))
        self._address_base = address_base
        self._used_addresses: set[str] = set()

    @staticmethod
    def _key(resource_group: str, name: str) -> tuple[str, str]:
        return (resource_group.lower(), name.lower())

    def __contains__(self, key: tuple[str, str]) -> bool:
        with self.lock:
            return self._key(*key) in self._scale_sets

    def scale_sets(self) -> list[ScaleSet]:
        with self.lock:
            return list(self._scale_sets.values())

    def add(self, scale_set: ScaleSet) -> None:
        with self.lock:
            self._scale_sets[self._key(scale_set.resource_group, scale_set.name)] = scale_set

    def pop(self, resource_group: str, name: str) -> ScaleSet | None:
        with self.lock:
            return self._scale_sets.pop(self._key(resource_group, name), None)

    def get(self, resource_group: str, name: str) -> ScaleSet:
        """The scale set, or ARM's 404 ResourceNotFound."""
        with self.lock:
            scale_set = self._scale_sets.get(self._key(resource_group, name))
        if scale_set is None:
            raise ArmError(
                404,
                "ResourceNotFound",
                f"The Resource '{VMSS_TYPE}/{name}' under resource group '{resource_group}' was not found. "
                "For more details please go to https://aka.ms/ARMResourceNotFoundFix",
            )
        return scale_set

    @staticmethod
    def get_instance(scale_set: ScaleSet, instance_id: str) -> Instance:
        inst = scale_set.instances.get(instance_id)
        if inst is None and scale_set.flexible:  # VM names are case-insensitive in ARM
            inst = next((i for n, i in scale_set.instances.items() if n.lower() == instance_id.lower()), None)
        if inst is None:
            raise ArmError(
                404,
                "NotFound",
                f"The entity was not found in this Azure location. (instance '{instance_id}' of '{scale_set.name}')",
            )
        return inst

    # -- addresses and runtimes ---------------------------------------------------------------------
    def _allocate_address(self) -> str:
        with self.lock:
            while True:
                addr = ipaddress.IPv4Address(self._next_address)
                self._next_address += 1
                last = int(addr) & 0xFF
                if last in (0, 255) or str(addr) == "127.0.0.1" or str(addr) in self._used_addresses:
                    continue
                if not addr.is_loopback:
                    raise RuntimeError(f"address pool exhausted (started at {self._address_base})")
                self._used_addresses.add(str(addr))
                return str(addr)

    def flexible_vm(self, resource_group: str, vm_name: str) -> tuple[ScaleSet, Instance]:
        """The Flexible scale set VM ``vm_name`` of ``resource_group``, or ARM's 404 ResourceNotFound."""
        with self.lock:
            for scale_set in self._scale_sets.values():
                if scale_set.flexible and scale_set.resource_group.lower() == resource_group.lower():
                    for name, inst in scale_set.instances.items():
                        if name.lower() == vm_name.lower():
                            return scale_set, inst
        raise ArmError(
            404,
            "ResourceNotFound",
            f"The Resource '{VM_TYPE}/{vm_name}' under resource group '{resource_group}' was not found. "
            "For more details please go to https://aka.ms/ARMResourceNotFoundFix",
        )

    def flexible_sets_in(self, resource_group: str) -> list[ScaleSet]:
        with self.lock:
            return [
                s
                for s in self._scale_sets.values()
                if s.flexible and s.resource_group.lower() == resource_group.lower()
            ]

    def start_instance(self, scale_set: ScaleSet, *, provisioning: bool) -> Instance:
        """A new instance on the scale set's current model, its runtime started on a free address;
        ``provisioning``: it still has to run the model's extension, so it shows "Creating" at once.

        Its id is the next number (Uniform) or, for a Flexible scale set, a VM name made as Azure makes
        them for instances it creates from the profile: the scale set's name and a unique suffix
        (MicrosoftDocs/azure-docs, flexible-virtual-machine-scale-sets-migration-resources.md, "Instance
        naming": "you provide a prefix, and Azure appends a unique number to the end of the name")."""
        with self.lock:
            seq = scale_set.next_id
            scale_set.next_id += 1
            instance_id = str(seq)
            if scale_set.flexible:
                digest = hashlib.sha256(f"{scale_set.unique_id}:{seq}".encode()).hexdigest()[:8]
                instance_id = f"{scale_set.name}_{digest}"
            model = scale_set.model
        last_error: OSError | None = None
        for _attempt in range(20):
            address = self._allocate_address()
            runtime = scale_set.runtime_factory(address, model.instance_model())
            try:
                runtime.start()
            except OSError as err:  # someone else holds this address:port; keep it reserved, move on
                last_error = err
                runtime.stop()
                continue
            break
        else:
            raise RuntimeError(f"could not bind an instance address: {last_error}")
        at = self.clock.now()
        inst = Instance(instance_id, address, runtime, applied=model, seq=seq, changed=at, created=at)
        with self.lock:
            scale_set.instances[instance_id] = inst
            if provisioning:
                inst.begin_work("Creating", at)
        return inst

    def stop_instances(self, scale_set: ScaleSet) -> None:
        """Stop every runtime of a (removed) scale set and free its addresses."""

        def stop(inst: Instance) -> None:
            try:
                inst.runtime.stop()
            finally:
                with self.lock:
                    self._used_addresses.discard(inst.address)

        # In parallel: a served runtime takes up to its poll interval to stop, and a fleet has hundreds.
        instances = list(scale_set.instances.values())
        if len(instances) <= 1:
            for inst in instances:
                stop(inst)
            return
        with ThreadPoolExecutor(max_workers=min(64, len(instances)), thread_name_prefix="arm-stop") as pool:
            for future in [pool.submit(stop, inst) for inst in instances]:
                future.result()  # re-raise a runtime's stop failure after all were attempted
