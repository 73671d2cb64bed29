"""How one person's hand departs from the canonical one (version-2 phantoms).

Sizes follow adult hand anthropometry: hand length 173 ± 9 mm in women and
190 ± 10 mm in men, hand breadth 78 ± 4 and 89 ± 5 mm (US Army ANSUR II, 2012,
and Pheasant's *Bodyspace*), with length and breadth correlated (r ≈ 0.6) and
each digit a few per cent longer or shorter than the hand's proportion. The
canonical hand of version 1 is 180 mm long and 84 mm broad.

What RA does beyond the scored lesions, and what a reader must ignore, is
drawn here too (every probability is a field of :class:`Realism`):

* bone density and cortical thickness fall with age (post-menopausal women
  fastest) and with disease (periarticular osteopenia near inflamed joints);
* inflamed joints get fusiform soft-tissue swelling;
* erosions take several shapes: marginal bites, central cysts, and at grade 5
  the pencil-in-cup end of a destroyed joint;
* severe disease deviates the fingers ulnarward and subluxes narrowed MCPs;
* sesamoids at the thumb's MCP (always two, as in adults) and sometimes at the
  index and little finger;
* not scored: osteoarthritis at the DIP joints (narrowing, osteophytes; DIPs
  are not part of the SvdH hand score), an old healed fracture, surgical
  hardware (a plate with screws on the distal radius, a screw in a
  metacarpal, a silicone MCP implant in a joint already at its maximum grade),
  flexed fingers (foreshortened phalanges), a little finger crossing the ring
  finger, a thumb rotated out of the PA plane.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .shapes import Bite, Bone, Ellipsoid, Tube
from .streams import Streams

METAL = 6.0  # relative density of steel and titanium against cortical bone
SILICONE = 0.55


@dataclass(frozen=True)
class Realism:
    """Shares and ranges of everything version 2 draws beyond version 1 (per hand unless said)."""

    swelling_per_inflamed_joint: float = 0.7
    cyst_share: float = 0.3  # erosion lesions drawn as central cysts
    pencil_in_cup_share: float = 0.6  # grade-5 joint ends drawn as pencil-in-cup
    ulnar_deviation_from_severity: float = 0.45  # patients above this severity deviate
    dip_oa_by_age: tuple[float, float] = (45.0, 40.0)  # share of hands with DIP OA: (age - a) / b, capped
    fracture: float = 0.04
    hardware: float = 0.03
    flexed_finger: float = 0.08  # per finger
    crossed_little_finger: float = 0.05
    rotated_thumb: float = 0.3
    extra_sesamoids: float = 0.3


@dataclass
class Morphology:
    """Per-hand departures from the canonical hand; the defaults (:data:`CANONICAL`) draw version 1."""

    length: float = 1.0
    width: float = 1.0
    digit_length: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0)  # thumb, index ... little
    carpal_size: float = 1.0
    cortex_density: float = 1.0
    marrow_density: float = 1.0
    thumb_width: float = 1.0
    thumb_angle: float = 0.0
    ulnar_deviation: float = 0.0  # degrees at MCP 2-5, growing toward the little finger
    crossed_little_finger: bool = False
    flexion: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)  # degrees per digit (index ... little used)
    dip_oa: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)  # fraction of DIP joint space lost per digit
    subluxed: tuple[str, ...] = ()  # MCP joints subluxed (narrowing >= 3)
    inflamed: tuple[str, ...] = ()  # joints with swelling and periarticular osteopenia
    varied_erosions: bool = False
    sesamoids: bool = False
    extra_sesamoids: tuple[int, ...] = ()  # digits 2 and/or 5
    fracture: str | None = None  # "mc5" (boxer's) or "radius"
    hardware: str | None = None  # "plate", "screw" or "implant:mcpN"
    realism: Realism = field(default_factory=Realism)

    # -- used while the skeleton is built ---------------------------------------------------------------------
    def finger_angle(self, digit: int) -> float:
        """Degrees added to a finger's phalanges (negative: ulnarward)."""
        angle = -self.ulnar_deviation * (0.6 + 0.15 * (digit - 2))
        if digit == 5 and self.crossed_little_finger:
            angle += 14.0  # the little finger lies over the ring finger
        return angle

    def flexion_factor(self, digit: int) -> float:
        return float(np.cos(np.deg2rad(self.flexion[digit - 1])))

    def dip_space(self, digit: int) -> float:
        return 1.0 - self.dip_oa[digit - 1]

    def subluxation(self, joint: str, mc_dir: np.ndarray, radius: float) -> np.ndarray:
        """How far the base of the phalanx slid over the metacarpal head (volar, seen as proximal and ulnar)."""
        if joint not in self.subluxed:
            return np.zeros(2)
        return -mc_dir * radius * 0.9 + np.array([-radius * 0.5, 0.0])

    # -- after the skeleton ---------------------------------------------------------------------------------
    def finish(self, hand, erosion: dict[str, int], narrowing: dict[str, int], streams: Streams) -> None:  # noqa: ANN001
        """Density, sesamoids, swelling, periarticular osteopenia and what is not scored."""
        if self is CANONICAL:
            return
        for bone in hand.bones:
            bone.cortex_density *= self.cortex_density
            bone.marrow_density *= self.marrow_density
        if self.sesamoids:
            sesamoid_rng = streams("sesamoids")
            _sesamoids(hand, 1, 2, sesamoid_rng)
            for digit in self.extra_sesamoids:
                _sesamoids(hand, digit, 1, sesamoid_rng)
        for joint in self.inflamed:
            site = hand.sites[joint]
            swelling_rng = streams(f"swelling:{joint}")
            if swelling_rng.random() < self.realism.swelling_per_inflamed_joint:
                hand.soft.append(Tube(site.centre - (0, 3.0), site.centre + (0, 3.0), site.radius + 3.5, 0.045))
                hand.features.append(f"swelling:{joint}")
            hand.bites.append(
                Bite(site.centre.copy(), site.radius * 1.3, depth=float(swelling_rng.uniform(0.12, 0.25)))
            )
        for digit in range(2, 6):
            if self.dip_oa[digit - 1] > 0:
                _osteophytes(hand, digit, streams(f"osteophytes:{digit}"))
                hand.features.append(f"dip_oa:{digit}")
        if self.fracture is not None:
            _healed_fracture(hand, self.fracture, streams("fracture"))
            hand.features.append(f"fracture:{self.fracture}")
        if self.hardware is not None:
            _hardware(hand, self.hardware, streams("hardware"))
            hand.features.append(f"hardware:{self.hardware}")
        hand.features += [f"flexed:{d}" for d in range(2, 6) if self.flexion[d - 1] > 0]
        if self.crossed_little_finger:
            hand.features.append("crossed_little_finger")
        if self.ulnar_deviation > 0:
            hand.features.append(f"ulnar_deviation:{self.ulnar_deviation:.0f}")
        hand.features += [f"subluxed:{j}" for j in self.subluxed]


CANONICAL = Morphology()


def draw_morphology(
    person_scale: tuple[float, float],
    age: float,
    sex: str,
    severity: float,
    erosion: dict[str, int],
    narrowing: dict[str, int],
    rng: np.random.Generator,
    realism: Realism,
    streams: Streams | None = None,
) -> Morphology:
    """One hand of a person: its proportions, density and what is drawn beyond its grades. ``streams``
    (default: everything from ``rng``, in order) draws the same person again at another age and severity."""
    pick = streams or Streams.shared(rng)
    length, width = person_scale
    post_menopause = sex == "F" and age > 50
    loss = 0.006 * max(age - 40.0, 0.0) * (1.6 if post_menopause else 1.0) + 0.25 * severity
    density = float(np.clip(1.0 - loss + pick("density").normal(0.0, 0.04), 0.55, 1.1))
    damaged = [j for j, g in {**erosion, **narrowing}.items() if g > 0]
    active = 0.15 + 0.6 * severity
    inflamed = tuple(
        sorted({j for j in damaged if pick(f"inflamed:{j}").random() < active and j not in ("radius", "ulna")})
    )
    oa_share = float(np.clip((age - realism.dip_oa_by_age[0]) / realism.dip_oa_by_age[1], 0.0, 0.8))
    oa = [pick(f"dip_oa:{d}") for d in range(2, 6)]
    dip_oa = (0.0,) + tuple(float(r.uniform(0.3, 0.85)) if r.random() < oa_share * 0.6 else 0.0 for r in oa)
    deviation = 0.0
    if severity > realism.ulnar_deviation_from_severity:
        deviation = float(pick("ulnar_deviation").uniform(5.0, 25.0) * min(1.0, (severity - 0.4) / 0.4))
    subluxed = tuple(
        f"mcp{d}" for d in range(2, 6) if narrowing.get(f"mcp{d}", 0) >= 3 and pick(f"subluxed:{d}").random() < 0.5
    )
    hardware = None
    surgery = pick("surgery")
    if surgery.random() < realism.hardware:
        implantable = [d for d in range(2, 6) if erosion.get(f"mcp{d}", 0) == 5 and narrowing.get(f"mcp{d}", 0) == 4]
        kinds = ["plate", "screw"] + ([f"implant:mcp{implantable[0]}"] if implantable else [])
        hardware = str(surgery.choice(kinds))
    rng = pick("shape")
    return Morphology(
        length=length,
        width=width,
        digit_length=tuple(float(rng.normal(1.0, 0.025)) for _ in range(5)),
        carpal_size=float(width * rng.normal(1.0, 0.03)),
        cortex_density=density,
        marrow_density=density * float(rng.uniform(0.85, 1.0)),
        thumb_width=float(rng.uniform(0.78, 0.92)) if rng.random() < realism.rotated_thumb else 1.0,
        thumb_angle=float(rng.uniform(-10.0, 12.0)),
        ulnar_deviation=deviation,
        crossed_little_finger=bool(rng.random() < realism.crossed_little_finger),
        flexion=(0.0,)
        + tuple(float(rng.uniform(25.0, 65.0)) if rng.random() < realism.flexed_finger else 0.0 for _ in range(4)),
        dip_oa=dip_oa,
        subluxed=subluxed,
        inflamed=inflamed,
        varied_erosions=True,
        sesamoids=True,
        extra_sesamoids=tuple(d for d in (2, 5) if rng.random() < realism.extra_sesamoids),
        fracture=str(rng.choice(["mc5", "radius"])) if rng.random() < realism.fracture else None,
        hardware=hardware,
        realism=realism,
    )


def varied_erosion(bone: Bone, at_end: bool, grade: int, rng: np.random.Generator, realism: Realism) -> list[Bite]:
    """Erosions of one bone end as they look on radiographs: marginal bites at the bare area, central cysts in
    the subchondral bone, and at grade 5 a pencil-in-cup end. The area of bone lost grows with the grade as in
    version 1."""
    u = bone.axis
    normal = np.array([-u[1], u[0]])
    tip = bone.end if at_end else bone.start
    inward = -u if at_end else u
    radius_end = bone.end_radius if at_end else bone.start_radius
    bites = []
    if grade >= 5 and rng.random() < realism.pencil_in_cup_share:
        # the end whittled to a point: both margins eaten far back, the tip thinned
        for side in (-1.0, 1.0):
            for back in (0.4, 1.2, 2.0):
                centre = tip + inward * radius_end * back + normal * side * radius_end * 1.05
                bites.append(Bite(centre, radius_end * 0.75, depth=0.97))
        return bites
    for _ in range(min(grade, 4)):
        size = radius_end * (0.28 + 0.09 * grade) * rng.uniform(0.85, 1.15)
        if rng.random() < realism.cyst_share:
            centre = tip + inward * rng.uniform(1.5, 2.0 + 0.5 * grade) + normal * rng.uniform(-0.4, 0.4) * radius_end
            bites.append(Bite(centre, size * 0.8, depth=0.7))
        else:
            side = rng.choice((-1.0, 1.0))
            centre = (
                tip + inward * rng.uniform(1.0, 2.5 + 0.5 * grade) + normal * side * radius_end * rng.uniform(0.75, 1.0)
            )
            bites.append(Bite(centre, size * rng.uniform(0.8, 1.25), depth=0.95))
    if grade >= 5:
        bites.append(Bite(tip + inward * radius_end * 0.3, radius_end * 0.95, depth=0.8))
    return bites


def _sesamoids(hand, digit: int, count: int, rng: np.random.Generator) -> None:  # noqa: ANN001
    site = hand.sites[f"mcp{digit}"]
    for k in range(count):
        offset = np.array([(-1.0) ** k * site.radius * 0.45, -site.radius * 0.35]) + rng.normal(0.0, 0.3, 2)
        size = float(rng.uniform(2.0, 3.0))
        hand.bones.append(Ellipsoid(site.centre + offset, (size, size * 1.2), 0.0, 0.9, 0.45))


def _osteophytes(hand, digit: int, rng: np.random.Generator) -> None:  # noqa: ANN001
    site = hand.sites[f"dip{digit}"]
    for side in (-1.0, 1.0):
        if rng.random() < 0.8:
            spur = site.centre + np.array([side * site.radius * 1.15, rng.uniform(-0.8, 0.8)])
            hand.bones.append(Ellipsoid(spur, (float(rng.uniform(0.8, 1.6)), 1.0), 0.0, 1.1, 1.1))


def _healed_fracture(hand, where: str, rng: np.random.Generator) -> None:  # noqa: ANN001
    if where == "radius":
        bone = hand.long_bones["radius"]
        at = bone.end - bone.axis * float(rng.uniform(18.0, 26.0))  # the distal radius, Colles
    else:
        bone = hand.long_bones["mc5"]
        at = bone.end - bone.axis * float(rng.uniform(8.0, 14.0))  # the neck of the fifth metacarpal
    width = bone.shaft_radius * 1.25
    hand.bones.append(
        Ellipsoid(at, (width * 1.15, width * 0.9), float(np.arctan2(bone.axis[0], bone.axis[1])), 0.35, 0.3)
    )
    normal = np.array([-bone.axis[1], bone.axis[0]])
    for t in np.linspace(-1.0, 1.0, 5):  # a faint line across the shaft
        hand.bites.append(Bite(at + normal * t * bone.shaft_radius, 0.6, depth=0.35))


def _hardware(hand, kind: str, rng: np.random.Generator) -> None:  # noqa: ANN001
    if kind == "plate":
        radius = hand.long_bones["radius"]
        start = radius.end - radius.axis * 12.0
        end = start - radius.axis * float(rng.uniform(40.0, 60.0))
        normal = np.array([-radius.axis[1], radius.axis[0]])
        hand.extras.append(Tube(start, end, 1.1, METAL))
        for t in np.linspace(0.1, 0.9, 4):
            centre = start + (end - start) * t
            hand.extras.append(
                Tube(centre - normal * radius.shaft_radius, centre + normal * radius.shaft_radius, 0.9, METAL)
            )
    elif kind == "screw":
        mc1 = hand.long_bones["mc1"]
        normal = np.array([-mc1.axis[1], mc1.axis[0]])
        centre = mc1.start + mc1.axis * mc1.length * 0.5
        hand.extras.append(Tube(centre - normal * 4.5, centre + normal * 4.5, 1.0, METAL))
    else:  # a silicone MCP implant: stems in the metacarpal and the phalanx, a hinge where the joint was
        joint = kind.split(":")[1]
        site = hand.sites[joint]
        digit = int(joint[-1])
        axis = hand.proximal_phalanges[digit].axis
        hand.extras.append(Tube(site.centre - axis * 14.0, site.centre + axis * 10.0, 1.6, SILICONE))
        hand.extras.append(Tube(site.centre - axis * 2.0, site.centre + axis * 2.0, site.radius * 0.5, SILICONE))
