from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OutputFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_FORMAT_UNSPECIFIED: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_VDB: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_MESH: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_RAW: _ClassVar[OutputFormat]
OUTPUT_FORMAT_UNSPECIFIED: OutputFormat
OUTPUT_FORMAT_VDB: OutputFormat
OUTPUT_FORMAT_MESH: OutputFormat
OUTPUT_FORMAT_RAW: OutputFormat

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_prompt_length", "min_steps", "max_steps", "default_steps", "max_levels", "min_guidance", "max_guidance", "default_guidance", "max_queue", "max_condition_voxels", "chunk_bytes", "max_layout_faces", "max_scene_voxels", "max_extent_m")
    MAX_PROMPT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MIN_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_LEVELS_FIELD_NUMBER: _ClassVar[int]
    MIN_GUIDANCE_FIELD_NUMBER: _ClassVar[int]
    MAX_GUIDANCE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_GUIDANCE_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_FIELD_NUMBER: _ClassVar[int]
    MAX_CONDITION_VOXELS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_LAYOUT_FACES_FIELD_NUMBER: _ClassVar[int]
    MAX_SCENE_VOXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_EXTENT_M_FIELD_NUMBER: _ClassVar[int]
    max_prompt_length: int
    min_steps: int
    max_steps: int
    default_steps: int
    max_levels: int
    min_guidance: float
    max_guidance: float
    default_guidance: float
    max_queue: int
    max_condition_voxels: int
    chunk_bytes: int
    max_layout_faces: int
    max_scene_voxels: int
    max_extent_m: float
    def __init__(self, max_prompt_length: _Optional[int] = ..., min_steps: _Optional[int] = ..., max_steps: _Optional[int] = ..., default_steps: _Optional[int] = ..., max_levels: _Optional[int] = ..., min_guidance: _Optional[float] = ..., max_guidance: _Optional[float] = ..., default_guidance: _Optional[float] = ..., max_queue: _Optional[int] = ..., max_condition_voxels: _Optional[int] = ..., chunk_bytes: _Optional[int] = ..., max_layout_faces: _Optional[int] = ..., max_scene_voxels: _Optional[int] = ..., max_extent_m: _Optional[float] = ...) -> None: ...

class ServerInfo(_message.Message):
    __slots__ = ("server_version", "api_version", "model_id", "model_loaded", "num_levels", "voxel_sizes", "coarse_shape", "class_names", "device", "limits", "supported_outputs", "queue_length", "busy", "auth_required")
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_LOADED_FIELD_NUMBER: _ClassVar[int]
    NUM_LEVELS_FIELD_NUMBER: _ClassVar[int]
    VOXEL_SIZES_FIELD_NUMBER: _ClassVar[int]
    COARSE_SHAPE_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    BUSY_FIELD_NUMBER: _ClassVar[int]
    AUTH_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    server_version: str
    api_version: str
    model_id: str
    model_loaded: bool
    num_levels: int
    voxel_sizes: _containers.RepeatedScalarFieldContainer[float]
    coarse_shape: _containers.RepeatedScalarFieldContainer[int]
    class_names: _containers.RepeatedScalarFieldContainer[str]
    device: str
    limits: Limits
    supported_outputs: _containers.RepeatedScalarFieldContainer[OutputFormat]
    queue_length: int
    busy: bool
    auth_required: bool
    def __init__(self, server_version: _Optional[str] = ..., api_version: _Optional[str] = ..., model_id: _Optional[str] = ..., model_loaded: _Optional[bool] = ..., num_levels: _Optional[int] = ..., voxel_sizes: _Optional[_Iterable[float]] = ..., coarse_shape: _Optional[_Iterable[int]] = ..., class_names: _Optional[_Iterable[str]] = ..., device: _Optional[str] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., supported_outputs: _Optional[_Iterable[_Union[OutputFormat, str]]] = ..., queue_length: _Optional[int] = ..., busy: _Optional[bool] = ..., auth_required: _Optional[bool] = ...) -> None: ...

class RawArray(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ConditionGrid(_message.Message):
    __slots__ = ("ijk", "voxel_size", "semantics")
    IJK_FIELD_NUMBER: _ClassVar[int]
    VOXEL_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEMANTICS_FIELD_NUMBER: _ClassVar[int]
    ijk: RawArray
    voxel_size: float
    semantics: RawArray
    def __init__(self, ijk: _Optional[_Union[RawArray, _Mapping]] = ..., voxel_size: _Optional[float] = ..., semantics: _Optional[_Union[RawArray, _Mapping]] = ...) -> None: ...

class LayoutMesh(_message.Message):
    __slots__ = ("vertices", "faces", "face_classes", "fit", "no_ground", "part_names", "face_parts")
    VERTICES_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    FACE_CLASSES_FIELD_NUMBER: _ClassVar[int]
    FIT_FIELD_NUMBER: _ClassVar[int]
    NO_GROUND_FIELD_NUMBER: _ClassVar[int]
    PART_NAMES_FIELD_NUMBER: _ClassVar[int]
    FACE_PARTS_FIELD_NUMBER: _ClassVar[int]
    vertices: RawArray
    faces: RawArray
    face_classes: RawArray
    fit: bool
    no_ground: bool
    part_names: _containers.RepeatedScalarFieldContainer[str]
    face_parts: RawArray
    def __init__(self, vertices: _Optional[_Union[RawArray, _Mapping]] = ..., faces: _Optional[_Union[RawArray, _Mapping]] = ..., face_classes: _Optional[_Union[RawArray, _Mapping]] = ..., fit: _Optional[bool] = ..., no_ground: _Optional[bool] = ..., part_names: _Optional[_Iterable[str]] = ..., face_parts: _Optional[_Union[RawArray, _Mapping]] = ...) -> None: ...

class SceneLevel(_message.Message):
    __slots__ = ("ijk", "normals", "semantics", "voxel_size")
    IJK_FIELD_NUMBER: _ClassVar[int]
    NORMALS_FIELD_NUMBER: _ClassVar[int]
    SEMANTICS_FIELD_NUMBER: _ClassVar[int]
    VOXEL_SIZE_FIELD_NUMBER: _ClassVar[int]
    ijk: RawArray
    normals: RawArray
    semantics: RawArray
    voxel_size: float
    def __init__(self, ijk: _Optional[_Union[RawArray, _Mapping]] = ..., normals: _Optional[_Union[RawArray, _Mapping]] = ..., semantics: _Optional[_Union[RawArray, _Mapping]] = ..., voxel_size: _Optional[float] = ...) -> None: ...

class EditRegion(_message.Message):
    __slots__ = ("levels", "x0", "y0", "x1", "y1", "halo", "scene_extent_m", "grow")
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    X0_FIELD_NUMBER: _ClassVar[int]
    Y0_FIELD_NUMBER: _ClassVar[int]
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    HALO_FIELD_NUMBER: _ClassVar[int]
    SCENE_EXTENT_M_FIELD_NUMBER: _ClassVar[int]
    GROW_FIELD_NUMBER: _ClassVar[int]
    levels: _containers.RepeatedCompositeFieldContainer[SceneLevel]
    x0: float
    y0: float
    x1: float
    y1: float
    halo: int
    scene_extent_m: _containers.RepeatedScalarFieldContainer[float]
    grow: bool
    def __init__(self, levels: _Optional[_Iterable[_Union[SceneLevel, _Mapping]]] = ..., x0: _Optional[float] = ..., y0: _Optional[float] = ..., x1: _Optional[float] = ..., y1: _Optional[float] = ..., halo: _Optional[int] = ..., scene_extent_m: _Optional[_Iterable[float]] = ..., grow: _Optional[bool] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("prompt", "seed", "steps", "guidance", "num_levels", "outputs", "condition", "client_tag", "layout_mesh", "edit", "extent_m", "resample", "class_prior")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_FIELD_NUMBER: _ClassVar[int]
    NUM_LEVELS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TAG_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_MESH_FIELD_NUMBER: _ClassVar[int]
    EDIT_FIELD_NUMBER: _ClassVar[int]
    EXTENT_M_FIELD_NUMBER: _ClassVar[int]
    RESAMPLE_FIELD_NUMBER: _ClassVar[int]
    CLASS_PRIOR_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    seed: int
    steps: int
    guidance: float
    num_levels: int
    outputs: _containers.RepeatedScalarFieldContainer[OutputFormat]
    condition: ConditionGrid
    client_tag: str
    layout_mesh: LayoutMesh
    edit: EditRegion
    extent_m: _containers.RepeatedScalarFieldContainer[float]
    resample: int
    class_prior: float
    def __init__(self, prompt: _Optional[str] = ..., seed: _Optional[int] = ..., steps: _Optional[int] = ..., guidance: _Optional[float] = ..., num_levels: _Optional[int] = ..., outputs: _Optional[_Iterable[_Union[OutputFormat, str]]] = ..., condition: _Optional[_Union[ConditionGrid, _Mapping]] = ..., client_tag: _Optional[str] = ..., layout_mesh: _Optional[_Union[LayoutMesh, _Mapping]] = ..., edit: _Optional[_Union[EditRegion, _Mapping]] = ..., extent_m: _Optional[_Iterable[float]] = ..., resample: _Optional[int] = ..., class_prior: _Optional[float] = ...) -> None: ...

class Queued(_message.Message):
    __slots__ = ("position", "queue_length")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    position: int
    queue_length: int
    def __init__(self, position: _Optional[int] = ..., queue_length: _Optional[int] = ...) -> None: ...

class Started(_message.Message):
    __slots__ = ("device", "queued_seconds")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    QUEUED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    device: str
    queued_seconds: float
    def __init__(self, device: _Optional[str] = ..., queued_seconds: _Optional[float] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("level", "step", "total")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    level: int
    step: int
    total: int
    def __init__(self, level: _Optional[int] = ..., step: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class ArtifactInfo(_message.Message):
    __slots__ = ("name", "format", "media_type", "file_extension", "size", "sha256", "dtype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    FILE_EXTENSION_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    format: OutputFormat
    media_type: str
    file_extension: str
    size: int
    sha256: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., format: _Optional[_Union[OutputFormat, str]] = ..., media_type: _Optional[str] = ..., file_extension: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class LevelStart(_message.Message):
    __slots__ = ("index", "num_levels", "num_voxels", "voxel_size", "origin", "class_names", "seconds", "metadata_json", "artifacts")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NUM_LEVELS_FIELD_NUMBER: _ClassVar[int]
    NUM_VOXELS_FIELD_NUMBER: _ClassVar[int]
    VOXEL_SIZE_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    index: int
    num_levels: int
    num_voxels: int
    voxel_size: float
    origin: _containers.RepeatedScalarFieldContainer[float]
    class_names: _containers.RepeatedScalarFieldContainer[str]
    seconds: float
    metadata_json: str
    artifacts: _containers.RepeatedCompositeFieldContainer[ArtifactInfo]
    def __init__(self, index: _Optional[int] = ..., num_levels: _Optional[int] = ..., num_voxels: _Optional[int] = ..., voxel_size: _Optional[float] = ..., origin: _Optional[_Iterable[float]] = ..., class_names: _Optional[_Iterable[str]] = ..., seconds: _Optional[float] = ..., metadata_json: _Optional[str] = ..., artifacts: _Optional[_Iterable[_Union[ArtifactInfo, _Mapping]]] = ...) -> None: ...

class ArtifactChunk(_message.Message):
    __slots__ = ("level", "artifact", "offset", "data")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    level: int
    artifact: int
    offset: int
    data: bytes
    def __init__(self, level: _Optional[int] = ..., artifact: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class LevelEnd(_message.Message):
    __slots__ = ("index",)
    INDEX_FIELD_NUMBER: _ClassVar[int]
    index: int
    def __init__(self, index: _Optional[int] = ...) -> None: ...

class Finished(_message.Message):
    __slots__ = ("num_levels", "total_seconds", "level_seconds")
    NUM_LEVELS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LEVEL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    num_levels: int
    total_seconds: float
    level_seconds: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, num_levels: _Optional[int] = ..., total_seconds: _Optional[float] = ..., level_seconds: _Optional[_Iterable[float]] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "field")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    field: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., field: _Optional[str] = ...) -> None: ...

class GenerateEvent(_message.Message):
    __slots__ = ("request_id", "queued", "started", "progress", "level_start", "chunk", "level_end", "finished", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    LEVEL_START_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    LEVEL_END_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    queued: Queued
    started: Started
    progress: Progress
    level_start: LevelStart
    chunk: ArtifactChunk
    level_end: LevelEnd
    finished: Finished
    error: Error
    def __init__(self, request_id: _Optional[str] = ..., queued: _Optional[_Union[Queued, _Mapping]] = ..., started: _Optional[_Union[Started, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., level_start: _Optional[_Union[LevelStart, _Mapping]] = ..., chunk: _Optional[_Union[ArtifactChunk, _Mapping]] = ..., level_end: _Optional[_Union[LevelEnd, _Mapping]] = ..., finished: _Optional[_Union[Finished, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...
