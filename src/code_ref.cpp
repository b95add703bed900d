// Code and data addresses as (module, offset) (placeholder).
